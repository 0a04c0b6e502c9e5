"""Which requests the pure-ASGI read takes ahead of FastAPI: only the plain campaign detail."""

from __future__ import annotations

from query_api.entrypoints.http.fast_read import MIN_VERSION_KEY, CampaignList, CampaignRead, list_question


def scope(path: str, method: str = "GET", query: bytes = b"") -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "query_string": query}


def test_only_a_plain_get_of_one_campaign_or_one_with_min_version_alone_is_taken() -> None:
    assert CampaignRead.takes(scope("/campaigns/c-1"))
    for query, version in (
        (b"min_version=2", 2),
        (b"min_version=007", 7),
        (b"min_version=" + b"9" * 18, 10**18 - 1),
    ):
        taken = scope("/campaigns/c-1", query=query)
        assert CampaignRead.takes(taken), query
        assert taken[MIN_VERSION_KEY] == version
    for other in (
        scope("/campaigns/c-1", query=b"as_of_version=1"),
        # FastAPI's: a 422 (0, not digits, too long, escaped), or parameters beside it.
        scope("/campaigns/c-1", query=b"min_version=0"),
        scope("/campaigns/c-1", query=b"min_version="),
        scope("/campaigns/c-1", query=b"min_version=-1"),
        scope("/campaigns/c-1", query=b"min_version=1.0"),
        scope("/campaigns/c-1", query=b"min_version=%31"),
        scope("/campaigns/c-1", query=b"min_version=" + b"1" * 19),
        scope("/campaigns/c-1", query=b"min_version=2&as_of_version=1"),
        scope("/campaigns/c-1", query=b"min_version=2&min_version=3"),
        scope("/campaigns/c-1", query=b"min_version=2&"),
        scope("/campaigns/c-1/history", query=b"min_version=2"),
        scope("/campaigns/c-1/history"),
        scope("/campaigns/"),
        scope("/campaigns"),
        scope("/campaignsx/c-1"),
        scope("/users/me"),
        scope("/campaigns/c-1", method="HEAD"),
        scope("/campaigns/c-1", method="DELETE"),
    ):
        assert not CampaignRead.takes(other), other


def test_a_list_is_taken_only_when_every_parameter_is_known_once_and_valid() -> None:
    for query in (
        b"",
        b"status=active&sort=-created_at&limit=20",
        b"channel=sms&tag=spring%20sale&owner_id=u-1&sort=name&limit=100&cursor=YzE",
        b"limit=1",
    ):
        assert CampaignList.takes(scope("/campaigns", query=query)), query
    for query in (
        b"status=deleted",  # not a live status
        b"status=",
        b"channel=fax",
        b"sort=created",
        b"limit=0",
        b"limit=101",
        b"limit=020",
        b"limit=+5",
        b"limit=5.0",
        b"tag=",
        b"tag=" + b"x" * 101,
        b"owner_id=",
        b"cursor=" + b"c" * 2001,
        b"status=active&status=draft",  # repeated: FastAPI decides which it takes
        b"verbose=1",  # unknown: FastAPI ignores it
    ):
        assert not CampaignList.takes(scope("/campaigns", query=query)), query
    assert not CampaignList.takes(scope("/campaigns", method="HEAD"))
    assert not CampaignList.takes(scope("/campaigns/", query=b"limit=5"))
    assert list_question(b"tag=%C3%A9t%C3%A9") == {"tag": "été"}  # percent-escapes as UTF-8
