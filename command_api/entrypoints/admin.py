"""`campaigns users grant-admin EMAIL`: the only way anyone becomes an admin."""

from __future__ import annotations

import uuid

from command_api.application import user_handlers
from command_api.application.commands import GrantAdmin
from command_api.bootstrap import open_command_side
from service_runtime.logs import correlation_id
from service_runtime.settings import Settings


async def grant_admin(settings: Settings, email: str) -> str:
    """Add the admin role (records UserRolesChanged); LookupError if no user has this e-mail."""
    side = open_command_side(settings)
    token = correlation_id.set(f"cli-{uuid.uuid4().hex}")
    try:
        return await user_handlers.grant_admin(GrantAdmin(email=email), side.unit_of_work())
    finally:
        correlation_id.reset(token)
        await side.close()
