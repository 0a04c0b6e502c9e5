"""Remembered token checks never outlive the token: an expired token is refused, cached or not; a
token issued before its user's sessions ended is refused within `session_check_seconds`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt
import pytest

from query_api.entrypoints.http.authentication import TokenVerifier
from service_runtime.keys import PRIVATE_FILE, generate_key_pair
from service_runtime.problems import Problem
from service_runtime.sessions import SessionCutoffs
from service_runtime.settings import Settings
from service_runtime.tokens import InvalidToken, issue_access_token
from tests.support.clock import Clock
from tests.support.keys import key_settings

SETTINGS = Settings(app_env="test", access_token_ttl_seconds=60, **key_settings())  # type: ignore[arg-type]


class FakeRedis:
    """GET, and the EVAL that only raises an instant, over a dict; counts reads."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.reads = 0

    async def get(self, key: str) -> str | None:
        self.reads += 1
        return self.values.get(key)

    async def eval(self, script: str, numkeys: int, key: str, instant: str, ttl: str) -> int:
        if float(instant) > float(self.values.get(key, "0")):
            self.values[key] = instant
        return 0


def cutoffs(redis: FakeRedis | None = None, clock: Clock | None = None) -> SessionCutoffs:
    return SessionCutoffs(
        redis or FakeRedis(),  # type: ignore[arg-type]
        prefix="t",
        check_seconds=1.0,
        token_ttl_seconds=900,
        clock=clock or Clock(),
    )


async def test_a_remembered_token_is_refused_once_it_expires() -> None:
    clock = Clock(time.time())
    verifier = TokenVerifier(SETTINGS, cutoffs(), clock=clock)
    token = issue_access_token(SETTINGS, "alice", ["user"])
    assert (await verifier.principal(token)).user_id == "alice"
    assert (await verifier.principal(token)).user_id == "alice"  # remembered
    clock.now = jwt.decode(token, options={"verify_signature": False})["exp"]
    with pytest.raises(InvalidToken):
        await verifier.principal(token)


async def test_a_forged_token_is_refused_every_time(tmp_path: Path) -> None:
    verifier = TokenVerifier(SETTINGS, cutoffs())
    generate_key_pair(tmp_path)
    attacker = Settings(app_env="test", jwt_private_key_file=str(tmp_path / PRIVATE_FILE))
    forged = issue_access_token(attacker, "alice", ["admin"])
    for _ in range(2):
        with pytest.raises(InvalidToken):
            await verifier.principal(forged)


async def test_a_token_issued_before_its_users_sessions_ended_is_refused_after_the_check_interval() -> None:
    redis, clock = FakeRedis(), Clock()
    other_process = cutoffs(redis, clock)
    verifier = TokenVerifier(SETTINGS, cutoffs(redis, clock))
    old = issue_access_token(SETTINGS, "alice", ["user"])
    assert (await verifier.principal(old)).user_id == "alice"
    await asyncio.sleep(0.002)  # the instant has milliseconds: a later one
    await other_process.end_sessions("alice")
    assert (await verifier.principal(old)).user_id == "alice"  # remembered for check_seconds
    clock.now += 1.01
    with pytest.raises(InvalidToken, match="ended"):
        await verifier.principal(old)
    await asyncio.sleep(0.002)
    new = issue_access_token(SETTINGS, "alice", ["user"])
    assert (await verifier.principal(new)).user_id == "alice"
    assert redis.reads == 2  # one read per user per interval, not per request


async def test_an_instant_only_moves_forward() -> None:
    redis = FakeRedis()
    process = cutoffs(redis)
    later = await process.end_sessions("bob", at=2000.0)
    await process.end_sessions("bob", at=1000.0)
    assert await process.valid_after("bob") == later


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "Token abc"])
async def test_anything_but_a_bearer_token_is_a_401(header: str | None) -> None:
    with pytest.raises(Problem) as raised:
        await TokenVerifier(SETTINGS, cutoffs()).authenticate(header)
    assert raised.value.status == 401
    assert raised.value.headers["WWW-Authenticate"].startswith("Bearer")


class SlowRedis(FakeRedis):
    """Reads wait until the test lets them answer."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()
        self.asked = asyncio.Event()

    async def get(self, key: str) -> str | None:
        self.reads += 1
        value = self.values.get(key)
        self.asked.set()
        await self.answer.wait()
        return value


async def test_requests_that_find_the_instant_expired_together_share_one_read() -> None:
    redis = SlowRedis()
    checks = cutoffs(redis)
    waiting = [asyncio.create_task(checks.valid_after("u1")) for _ in range(20)]
    await asyncio.sleep(0)
    redis.answer.set()
    assert await asyncio.gather(*waiting) == [0.0] * 20
    assert redis.reads == 1
    assert await checks.valid_after("u1") == 0.0  # remembered
    assert redis.reads == 1


async def test_a_read_sent_before_the_sessions_ended_is_not_remembered_after() -> None:
    redis = SlowRedis()
    checks = cutoffs(redis)
    before = asyncio.create_task(checks.valid_after("u1"))
    await redis.asked.wait()  # the read is on its way
    ended = await checks.end_sessions("u1", at=500.0)
    redis.answer.set()
    assert await before == 0.0  # asked before the end: may answer the old instant
    assert await checks.valid_after("u1") == ended  # asked after: reads again
    assert redis.reads == 2


async def test_the_remembered_answer_is_the_one_authenticate_gives_or_none() -> None:
    redis, clock, wall = FakeRedis(), Clock(), Clock(time.time())
    verifier = TokenVerifier(SETTINGS, cutoffs(redis, clock), clock=wall)
    token = issue_access_token(SETTINGS, "alice", ["user"])
    header = f"Bearer {token}"
    assert verifier.remembered(header) is None  # never verified: authenticate decides
    assert (await verifier.authenticate(header)).user_id == "alice"
    assert verifier.remembered(header) == await verifier.authenticate(header)
    assert verifier.remembered(f"bearer  {token} ") is not None  # as authenticate reads the header
    for other in (None, "", "Bearer", f"Basic {token}", "Bearer forged"):
        assert verifier.remembered(other) is None
    # The user's instant read more than check_seconds ago: ask again (authenticate reads it).
    clock.now += 1.01
    assert verifier.remembered(header) is None
    assert (await verifier.authenticate(header)).user_id == "alice"
    assert verifier.remembered(header) is not None
    # Sessions ended after the token was issued: never answered from memory, and refused.
    await asyncio.sleep(0.002)
    await cutoffs(redis, clock).end_sessions("alice")
    clock.now += 1.01
    assert verifier.remembered(header) is None
    with pytest.raises(Problem):
        await verifier.authenticate(header)
    assert verifier.remembered(header) is None  # the refused instant is remembered, the token is not let in


async def test_an_expired_token_is_never_answered_from_memory() -> None:
    wall = Clock(time.time())
    verifier = TokenVerifier(SETTINGS, cutoffs(), clock=wall)
    token = issue_access_token(SETTINGS, "alice", ["user"])
    await verifier.authenticate(f"Bearer {token}")
    assert verifier.remembered(f"Bearer {token}") is not None
    wall.now = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert verifier.remembered(f"Bearer {token}") is None
    with pytest.raises(Problem):
        await verifier.authenticate(f"Bearer {token}")
