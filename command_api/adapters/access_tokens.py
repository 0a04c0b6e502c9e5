"""Access tokens issued with the shared token code, so both APIs verify them identically."""

from __future__ import annotations

from command_api.application.ports import AccessToken
from service_runtime.settings import Settings
from service_runtime.tokens import issue_access_token


class JwtAccessTokenIssuer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def issue(self, user_id: str, roles: list[str]) -> AccessToken:
        token = issue_access_token(self._settings, user_id, roles)
        return AccessToken(token=token, expires_in=self._settings.access_token_ttl_seconds)
