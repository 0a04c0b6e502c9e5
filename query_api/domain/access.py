"""Who may read what: owners read their own campaigns, admins read everything."""

from __future__ import annotations

from service_runtime.tokens import Principal


def may_read(principal: Principal, owner_id: str | None) -> bool:
    return principal.is_admin or (owner_id is not None and owner_id == principal.user_id)
