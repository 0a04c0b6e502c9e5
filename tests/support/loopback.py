"""httpx clients for the tests, all sharing one TLS context.

The tests speak plain HTTP to servers on loopback, yet an httpx client made without `verify`
builds a new SSL context and loads certifi's CA bundle into it: 40-50 ms of CPU a client, taken
from the servers and services under test on the same two cores (`RunningServices.wait_ready`
polled with a new client every 0.2 s). Given one context, a client costs about 0.25 ms. Trust is
what httpx's default gives.
"""

from __future__ import annotations

from typing import Any

import httpx

TLS = httpx.create_ssl_context()


def client(**kwargs: Any) -> httpx.AsyncClient:
    """`httpx.AsyncClient(**kwargs)` on the shared TLS context."""
    return httpx.AsyncClient(verify=TLS, **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    """`httpx.get(url, **kwargs)` on the shared TLS context."""
    return httpx.get(url, verify=TLS, **kwargs)
