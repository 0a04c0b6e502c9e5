"""Ed25519 keys for access tokens: the command API signs with the private key, every verifier holds
only public keys, each named by its `kid` (the RFC 7638 thumbprint of the public key).

Where keys come from, first match wins:
- private: `CAMPAIGNS_JWT_PRIVATE_KEY` (PEM text), `CAMPAIGNS_JWT_PRIVATE_KEY_FILE`, or the
  per-install `<local_dir>/keys/access-token.key` that `campaigns stack up` / `make up` generate;
- public: `CAMPAIGNS_JWT_PUBLIC_KEYS` (one or more PEM blocks), `CAMPAIGNS_JWT_PUBLIC_KEYS_FILE`, or
  `<local_dir>/keys/access-token.pub`. Several public keys are accepted at once (a rotation), the
  one a token names in its `kid` header verifies it. The private key's own public half is always
  accepted by the process that holds it.

No key ships in the repository and none is defaulted: a process that needs a key and finds none
refuses to start.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

if TYPE_CHECKING:
    from service_runtime.settings import Settings

PRIVATE_FILE = "access-token.key"
PUBLIC_FILE = "access-token.pub"
_PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", re.S)


class KeyUnavailable(RuntimeError):
    """No usable key is configured, or the configured one is unreadable or too weak."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey


def key_id(public: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint of an Ed25519 public key (base64url, no padding)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    canonical = f'{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}'.encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


REPO = Path(__file__).resolve().parents[1]


def _local_keys(local_dir: str) -> Path:
    # A relative local_dir is the repository's, as for every other file the stack keeps.
    return REPO / local_dir / "keys"


def key_directory(settings: Settings) -> Path:
    return _local_keys(settings.local_dir)


def generate_key_pair(directory: Path) -> str:
    """Write a new private key (mode 0600) and its public key into `directory`; return the kid.
    An existing key there is never overwritten."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (directory / PRIVATE_FILE).exists():
        raise FileExistsError(f"{directory / PRIVATE_FILE} exists; keep it or move it away first")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    target = directory / PRIVATE_FILE
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(target, 0o600)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (directory / PUBLIC_FILE).write_bytes(public_pem)
    return key_id(private.public_key())


def ensure_local_keys(settings: Settings) -> Path | None:
    """Generate the per-install key pair under `<local_dir>/keys/` unless keys are configured or
    already there; return the directory written to, or None when nothing was generated."""
    if settings.jwt_private_key.get_secret_value() or settings.jwt_private_key_file:
        return None
    directory = key_directory(settings)
    if (directory / PRIVATE_FILE).exists():
        return None
    generate_key_pair(directory)
    return directory


def _pem(text: str) -> str:
    # PEM given in an environment variable may carry literal "\\n" for its line breaks.
    return text.replace("\\n", "\n").strip()


@dataclass(frozen=True)
class _KeyConfig:
    """The settings fields keys come from (hashable, so loaded keys are cached per configuration)."""

    private: str
    private_file: str
    public: str
    public_file: str
    local_dir: str
    allow_local: bool  # the per-install pair under local_dir; never in production

    @classmethod
    def of(cls, settings: Settings) -> _KeyConfig:
        return cls(
            settings.jwt_private_key.get_secret_value(),
            settings.jwt_private_key_file,
            settings.jwt_public_keys,
            settings.jwt_public_keys_file,
            settings.local_dir,
            settings.app_env != "production",
        )

    @property
    def holds_private(self) -> bool:
        return bool(self.private or self.private_file)

    def private_source(self) -> tuple[str, str] | None:
        """(pem text, where it came from), or None when no private key is configured or present."""
        if self.private:
            return _pem(self.private), "CAMPAIGNS_JWT_PRIVATE_KEY"
        path = Path(self.private_file) if self.private_file else None
        if path is None:
            default = _local_keys(self.local_dir) / PRIVATE_FILE
            if not self.allow_local or not default.exists():
                return None
            path = default
        try:
            return path.read_text(), str(path)
        except OSError as exc:
            raise KeyUnavailable(f"cannot read the private key {path}: {exc.strerror}") from exc

    def public_source(self) -> tuple[str, str] | None:
        if self.public:
            return _pem(self.public), "CAMPAIGNS_JWT_PUBLIC_KEYS"
        path = Path(self.public_file) if self.public_file else _local_keys(self.local_dir) / PUBLIC_FILE
        if not self.public_file and (not self.allow_local or not path.exists()):
            return None
        try:
            return path.read_text(), str(path)
        except OSError as exc:
            raise KeyUnavailable(f"cannot read the public keys {path}: {exc.strerror}") from exc


def signing_key(settings: Settings) -> SigningKey:
    """The private key access tokens are signed with (read once per process and configuration)."""
    return _signing_key(_KeyConfig.of(settings))


def verification_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """Every public key this process accepts, by kid (read once per process and configuration)."""
    return _verification_keys(_KeyConfig.of(settings))


@lru_cache(maxsize=16)
def _signing_key(config: _KeyConfig) -> SigningKey:
    source = config.private_source()
    if source is None:
        raise KeyUnavailable(
            "no access-token signing key: set CAMPAIGNS_JWT_PRIVATE_KEY(_FILE), or (not in "
            "production) run `campaigns stack up` once to generate a per-install key under .local/keys/"
        )
    return _load_private(*source)


@lru_cache(maxsize=16)
def _verification_keys(config: _KeyConfig) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    public = config.public_source()
    if public is not None:
        keys.update(_load_public(*public))
    if config.holds_private:
        own = _signing_key(config)
        keys[own.kid] = own.private.public_key()
    if not keys:
        raise KeyUnavailable(
            "no access-token verification key: set CAMPAIGNS_JWT_PUBLIC_KEYS(_FILE), or (not in "
            "production) run `campaigns stack up` once to generate a per-install key under .local/keys/"
        )
    return keys


def _load_private(pem: str, origin: str) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyUnavailable(f"{origin} is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyUnavailable(f"{origin} is not an Ed25519 key")
    return SigningKey(key_id(key.public_key()), key)


def _load_public(text: str, origin: str) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for block in _PEM_BLOCK.findall(text):
        try:
            key = serialization.load_pem_public_key(block.encode())
        except ValueError as exc:
            raise KeyUnavailable(f"{origin} holds a block that is not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise KeyUnavailable(f"{origin} holds a key that is not Ed25519")
        keys[key_id(key)] = key
    if not keys:
        raise KeyUnavailable(f"{origin} holds no PEM public key")
    return keys


def production_problems(settings: Settings) -> list[str]:
    """Why the configured private key must not be used in production (empty when it may)."""
    config = _KeyConfig.of(settings)
    problems: list[str] = []
    if config.private_file and os.path.exists(config.private_file):
        mode = stat.S_IMODE(os.stat(config.private_file).st_mode)
        if mode & 0o077:
            problems.append(
                f"the private key file {config.private_file} is readable by others (mode {mode:o}); "
                "chmod 600 it"
            )
    if config.holds_private:
        try:
            seed = _signing_key(config).private.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
        except KeyUnavailable as exc:
            return [*problems, str(exc)]
        # A generated seed has ~30 distinct bytes of 32; a hand-made one (zeros, a counter) has few.
        if len(set(seed)) < 16:
            problems.append("the private key has a low-entropy seed; generate a new one")
    return problems
