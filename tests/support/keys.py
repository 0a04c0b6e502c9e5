"""Access-token keys for tests: a fresh Ed25519 pair per test run, in a temporary directory.

No key is ever committed: every run mints its own, and settings built for tests point at it.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import hmac
import shutil
import tempfile
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import orjson

from service_runtime.keys import PRIVATE_FILE, PUBLIC_FILE, generate_key_pair


@lru_cache(maxsize=1)
def run_keys() -> Path:
    """This run's key directory (`access-token.key`, mode 0600, and `access-token.pub`)."""
    directory = Path(tempfile.mkdtemp(prefix="campaigns-test-keys-"))
    atexit.register(shutil.rmtree, directory, True)
    generate_key_pair(directory)
    return directory


def key_settings() -> dict[str, object]:
    """The settings fields that make a process sign and verify with this run's keys."""
    directory = run_keys()
    return {
        "jwt_private_key_file": str(directory / PRIVATE_FILE),
        "jwt_public_keys_file": str(directory / PUBLIC_FILE),
    }


def hs256_token(claims: dict[str, object], secret: bytes, headers: dict[str, object]) -> str:
    """An HS256 token signed by hand, so any bytes can be the secret (PyJWT refuses a PEM as an
    HMAC key, which is exactly the key-confusion attack a verifier must refuse)."""
    header = {"alg": "HS256", **headers}

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims, default=_numeric_date))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def _numeric_date(value: object) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp())
    raise TypeError(type(value))
