"""`campaigns users grant-admin|revoke-admin EMAIL`: the only way anyone's roles change."""

from __future__ import annotations

import uuid

from command_api.application import user_handlers
from command_api.application.commands import ChangeRoles
from command_api.bootstrap import open_command_side
from service_runtime.logs import correlation_id
from service_runtime.settings import Settings


async def change_admin(settings: Settings, email: str, *, admin: bool) -> str:
    """Grant or revoke the admin role (records UserRolesChanged) and end the user's access tokens;
    LookupError if no user has this e-mail."""
    side = open_command_side(settings)
    token = correlation_id.set(f"cli-{uuid.uuid4().hex}")
    try:
        return await user_handlers.change_roles(
            ChangeRoles(email=email, admin=admin), side.unit_of_work(), side.credentials.sessions
        )
    finally:
        correlation_id.reset(token)
        await side.close()


async def grant_admin(settings: Settings, email: str) -> str:
    return await change_admin(settings, email, admin=True)


async def revoke_admin(settings: Settings, email: str) -> str:
    return await change_admin(settings, email, admin=False)
