"""The fast paths label their metrics with the route they stand in for: found in the routers,
which FastAPI 0.16x no longer lists flat in app.routes (a None route labels "unmatched")."""

from command_api.entrypoints.http.app import create_app as command_app
from query_api.entrypoints.http.app import create_app as query_app


def test_each_fast_path_carries_the_route_it_answers_for() -> None:
    query = query_app()
    assert command_app().fast_create.app.route.path == "/campaigns"
    assert query.fast_read.app.route.path == "/campaigns/{campaign_id}"
    assert query.fast_list.app.route.path == "/campaigns"
