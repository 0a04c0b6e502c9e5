"""Request and response bodies: typed, closed to unknown fields, documented in the OpenAPI."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, field_validator
from pydantic_core import PydanticCustomError

from command_api.domain import campaign as rules
from command_api.domain import user as user_rules
from events.types import Channel

# Generous outer bounds for the OpenAPI and a cheap first line; the domain holds the real policy.
EMAIL_MAX = 254
SECRET_MAX = 512


class _Body(BaseModel):
    # Unknown fields are refused, which is also what keeps owner_id, status, version and roles
    # out of reach of any client.
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(_Body):
    email: EmailStr = Field(max_length=EMAIL_MAX)
    password: str = Field(
        max_length=SECRET_MAX,
        description=(
            f"By default {user_rules.PASSWORD_MIN} to {user_rules.PASSWORD_MAX} characters, at least "
            f"{user_rules.PASSWORD_MIN_DISTINCT} different ones (settings), not a common password, "
            "not your e-mail or name"
        ),
    )
    name: str = Field(min_length=1, max_length=user_rules.NAME_MAX)


class LoginRequest(_Body):
    email: str = Field(min_length=1, max_length=EMAIL_MAX)
    password: str = Field(min_length=1, max_length=SECRET_MAX)


class PasswordChangeRequest(_Body):
    current_password: str = Field(min_length=1, max_length=SECRET_MAX)
    new_password: str = Field(
        max_length=SECRET_MAX,
        description=(
            "The registration policy applies (by default "
            f"{user_rules.PASSWORD_MIN} to {user_rules.PASSWORD_MAX} characters, at least "
            f"{user_rules.PASSWORD_MIN_DISTINCT} different ones; the bounds are settings), "
            "and it must differ from the current password"
        ),
    )


class RefreshTokenRequest(_Body):
    refresh_token: str = Field(min_length=1, max_length=SECRET_MAX)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str = Field(description="One use only: refreshing returns a new one")
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth token type name
    expires_in: int = Field(description="Seconds until the access token expires")


class CommandAccepted(BaseModel):
    id: str
    version: int = Field(description="The aggregate's version after this command; send it as If-Match")


class BudgetBody(_Body):
    amount: str = Field(pattern=rules.AMOUNT_PATTERN.pattern, examples=["1500.00"])
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217", examples=["EUR"])


Tag = str


class CampaignCreateRequest(_Body):
    name: str = Field(min_length=1, max_length=rules.NAME_MAX)
    description: str = Field(default="", max_length=rules.DESCRIPTION_MAX)
    channel: Channel
    budget: BudgetBody
    starts_at: AwareDatetime
    ends_at: AwareDatetime = Field(description="After starts_at")
    tags: list[Tag] = Field(default_factory=list, max_length=rules.TAGS_MAX)


class CampaignPatchRequest(_Body):
    """Only the fields to change; a field left out keeps its value, and null is not a value."""

    name: str | None = Field(default=None, min_length=1, max_length=rules.NAME_MAX)
    description: str | None = Field(default=None, max_length=rules.DESCRIPTION_MAX)
    channel: Channel | None = None
    budget: BudgetBody | None = Field(default=None, description="Replaced as a whole")
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    tags: list[Tag] | None = Field(default=None, max_length=rules.TAGS_MAX, description="Replaced as a whole")

    # Validators do not run on defaults: this refuses an explicit null and nothing else.
    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise PydanticCustomError("not_null", "may be left out, but not null")
        return value
