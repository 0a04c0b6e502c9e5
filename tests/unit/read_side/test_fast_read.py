"""Which requests the pure-ASGI read takes ahead of FastAPI: only the plain campaign detail."""

from __future__ import annotations

from query_api.entrypoints.http.fast_read import CampaignRead


def scope(path: str, method: str = "GET", query: bytes = b"") -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "query_string": query}


def test_only_a_plain_get_of_one_campaign_is_taken() -> None:
    assert CampaignRead.takes(scope("/campaigns/c-1"))
    for other in (
        scope("/campaigns/c-1", query=b"min_version=2"),
        scope("/campaigns/c-1", query=b"as_of_version=1"),
        scope("/campaigns/c-1/history"),
        scope("/campaigns/"),
        scope("/campaigns"),
        scope("/campaignsx/c-1"),
        scope("/users/me"),
        scope("/campaigns/c-1", method="HEAD"),
        scope("/campaigns/c-1", method="DELETE"),
    ):
        assert not CampaignRead.takes(other), other
