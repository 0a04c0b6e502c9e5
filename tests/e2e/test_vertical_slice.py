"""End to end through running processes: a command accepted on 8001 is read on 8002."""

from __future__ import annotations

import asyncio

import httpx

from tests.support import loopback
from tests.support.factories import campaign_body
from tests.support.services import RunningServices

ALL = ["command-api", "query-api", "relay", "projectors"]

CAMPAIGN = campaign_body()


async def test_created_campaign_is_readable_through_the_query_api_with_min_version(
    services: RunningServices,
) -> None:
    services.start(ALL)
    services.wait_ready()
    async with (
        loopback.client(base_url=services.command_url, timeout=10) as commands,
        loopback.client(base_url=services.query_url, timeout=10) as queries,
    ):
        registered = await commands.post(
            "/auth/register",
            json={"email": "E2E.User@Example.com", "password": "correct horse battery 9", "name": "E2E"},
        )
        assert registered.status_code == 201, registered.text
        login = await commands.post(
            "/auth/login", json={"email": "e2e.user@example.com", "password": "correct horse battery 9"}
        )
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}

        created = await commands.post("/campaigns", json=CAMPAIGN, headers=auth)
        assert created.status_code == 201, created.text
        campaign_id, version = created.json()["id"], created.json()["version"]
        assert created.headers["location"] == f"/campaigns/{campaign_id}"

        activated = await commands.post(f"/campaigns/{campaign_id}/activate", headers=auth)
        assert activated.status_code == 200, activated.text
        version = activated.json()["version"]

        read = await queries.get(f"/campaigns/{campaign_id}", params={"min_version": version}, headers=auth)
        assert read.status_code == 200, read.text
        body = read.json()
        assert body["id"] == campaign_id
        assert body["version"] == version == 2
        assert body["status"] == "active"
        assert body["name"] == CAMPAIGN["name"]
        assert body["budget"] == CAMPAIGN["budget"]
        assert body["owner_id"] == registered.json()["id"]

        # The user's own projection is another consumer group on another topic: read-your-writes
        # there is min_version too (registered = version 1).
        me = await queries.get("/users/me", params={"min_version": 1}, headers=auth)
        assert me.status_code == 200
        assert me.json()["email"] == "e2e.user@example.com"


async def test_both_apis_report_ready_only_with_their_servers(services: RunningServices) -> None:
    services.start(["command-api", "query-api", "projectors"])
    services.wait_ready()
    async with loopback.client(timeout=10) as client:
        for url in (services.command_url, services.query_url):
            assert (await client.get(f"{url}/health/live")).json() == {"status": "ok"}
            assert (await client.get(f"{url}/health/ready")).status_code == 200
            assert (await client.get(f"{url}/openapi.json")).status_code == 200


async def _get_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> bytes:
    writer.write(f"GET /health/live HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    return await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), 10)


async def test_an_idle_connection_is_kept_longer_than_a_client_pool_keeps_it(
    services: RunningServices,
) -> None:
    """`CAMPAIGNS_HTTP_KEEP_ALIVE_SECONDS` (75): an API keeps an idle connection longer than an
    HTTP client's pool does (httpx: 5 s). With uvicorn's own 5 s, a client reusing a pooled
    connection as the server closed it got no answer (a POST lost in the load test)."""
    services.start(["command-api"])
    services.wait_ready()
    url = httpx.URL(services.command_url)
    assert url.host and url.port
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        assert (await _get_on(reader, writer, url.host)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(7)  # idle past uvicorn's default of 5 s
        assert (await _get_on(reader, writer, url.host)).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
