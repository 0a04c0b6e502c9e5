"""Login and registration throttling in Redis, after OWASP's Authentication and Credential
Stuffing cheat sheets (device cookies) and NIST SP 800-63B §5.2.2.

- An **untrusted** client (no device cookie for this account, not an address this account logged
  in from) is held to two budgets, checked and reserved atomically *before* the password check:
  failed logins per address group (IPv4 address, IPv6 /64) per minute, across all accounts; and
  guesses per account per hour from all untrusted clients together. Over either, 429 with
  Retry-After, and the refused attempt is counted nowhere (an attacker cannot push a window on).
  A success gives its reservations back: only failures use up a budget.
- A **trusted** client (it kept the HttpOnly device cookie the account's last successful login
  set, or it comes from an address group the account logged in from before) skips both budgets,
  so neither a spray from its network nor a guessing campaign against the account keeps the owner
  out. It has a small failure budget of its own per account; spent, it is untrusted again.
- Registration is limited per address group.

Every key this module writes is named in `readmodels.keyspace.ThrottleKeys`, under `<prefix>:throttle:`.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from command_api.application.errors import LoginThrottled, RegistrationThrottled
from command_api.application.ports import LoginAdmission
from readmodels.keyspace import ThrottleKeys, throttle_digest


@dataclass(frozen=True)
class ThrottleLimits:
    address_max_failures: int = 50
    address_window_seconds: int = 60
    account_max_guesses: int = 100
    account_window_seconds: int = 3600
    trusted_max_failures: int = 10
    device_seconds: int = 90 * 24 * 3600
    known_addresses: int = 20
    register_max: int = 10
    register_window_seconds: int = 3600


def address_group(client: str) -> str:
    """The unit one client is counted as: an IPv4 address, or the /64 of an IPv6 address."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


_digest = throttle_digest


class RedisLoginThrottle:
    def __init__(self, redis: aioredis.Redis, *, prefix: str, limits: ThrottleLimits) -> None:
        self._redis = redis
        self._limits = limits
        self.keys = ThrottleKeys(prefix)
        self._reserve = redis.register_script(_RESERVE)
        self._take_back = redis.register_script(_TAKE_BACK)

    async def admit(self, email: str, client: str, device: str | None) -> LoginAdmission:
        """Reserve this attempt against the budgets that apply, or raise LoginThrottled."""
        account = _digest(email)
        group = address_group(client)
        limits = self._limits
        trusted = await self._trusted_client(account, group, device)
        if trusted is not None:
            key = self.keys.trusted_failures(account, trusted)
            if (
                await self._reserve_all([(key, limits.trusted_max_failures, limits.account_window_seconds)])
                == 0
            ):
                return LoginAdmission(account=account, group=group, take_back=(key,))
        address_key = self.keys.address_failures(group)
        account_key = self.keys.account_guesses(account)
        wait = await self._reserve_all(
            [
                (address_key, limits.address_max_failures, limits.address_window_seconds),
                (account_key, limits.account_max_guesses, limits.account_window_seconds),
            ]
        )
        if wait:
            raise LoginThrottled(retry_after=wait)
        return LoginAdmission(account=account, group=group, take_back=(address_key, account_key))

    async def succeeded(self, admission: LoginAdmission, device: str | None) -> str:
        """Give back what only failures should use, remember this client; return the device cookie."""
        limits = self._limits
        await self._take_back(keys=list(admission.take_back))
        if device is None or await self._trusted_client(admission.account, "", device) is None:
            device = secrets.token_urlsafe(32)
        known = self.keys.known_addresses(admission.account)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.device(device), admission.account, ex=limits.device_seconds)
            pipe.zadd(known, {_digest(admission.group): time.time()})
            pipe.zremrangebyrank(known, 0, -limits.known_addresses - 1)
            pipe.expire(known, limits.device_seconds)
            await pipe.execute()
        return device

    async def admit_registration(self, client: str) -> None:
        limits = self._limits
        key = self.keys.registrations(address_group(client))
        wait = await self._reserve_all([(key, limits.register_max, limits.register_window_seconds)])
        if wait:
            raise RegistrationThrottled(retry_after=wait)

    async def _trusted_client(self, account: str, group: str, device: str | None) -> str | None:
        """An id for the trusted client this is (its device, or its known address), or None."""
        if device:
            owner = await self._redis.get(self.keys.device(device))
            if owner is not None and (owner.decode() if isinstance(owner, bytes) else owner) == account:
                return f"device:{_digest(device)}"
        if await self._redis.zscore(self.keys.known_addresses(account), _digest(group)) is not None:
            return f"address:{_digest(group)}"
        return None

    async def _reserve_all(self, budgets: list[tuple[str, int, int]]) -> int:
        """0 when every counter was under its limit (each then counted once), else the seconds
        until the fullest one frees up (and nothing counted)."""
        args: list[int] = []
        for _, limit, window in budgets:
            args += [limit, window]
        return int(await self._reserve(keys=[key for key, _, _ in budgets], args=args))


# All or nothing: a counter at its limit refuses the attempt and none is incremented.
_RESERVE = """
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= limit then
    local ttl = redis.call('TTL', key)
    if ttl < 1 then ttl = tonumber(ARGV[2 * i]) end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('EXPIRE', key, tonumber(ARGV[2 * i]), 'NX')
end
return 0
"""

# Decrement only counters still alive: a DECR on an expired key would create one without a TTL.
_TAKE_BACK = """
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
return 0
"""
