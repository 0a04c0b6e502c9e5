"""/campaigns: create, edit, lifecycle and delete, each for the owner or an admin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from command_api.application import campaign_handlers
from command_api.application.commands import (
    ChangeCampaignStatus,
    CreateCampaign,
    DeleteCampaign,
    UpdateCampaign,
)
from command_api.application.ports import CommandResult
from command_api.bootstrap import CommandSide
from command_api.domain.campaign import LIFECYCLE_ACTIONS, Actor, CampaignChanges
from command_api.entrypoints.http.dependencies import (
    REQUIRED_IF_MATCH,
    CurrentActor,
    ExpectedVersion,
    RequiredVersion,
    Side,
)
from command_api.entrypoints.http.errors import problem_responses
from command_api.entrypoints.http.schemas import (
    CampaignCreateRequest,
    CampaignPatchRequest,
    CommandAccepted,
)
from service_runtime.openapi import ok

router = APIRouter(prefix="/campaigns", tags=["campaigns"])

IDEMPOTENCY_KEY_MAX = 200
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX,
        description="Repeat a create safely: the same key and body get the same answer, and one campaign",
    ),
]


def _accepted(result: CommandResult, response: Response) -> CommandAccepted:
    response.headers["ETag"] = f'"{result.version}"'
    return CommandAccepted(id=result.id, version=result.version)


@router.post(
    "",
    status_code=201,
    summary="Create a campaign (a draft owned by the caller)",
    responses={
        **ok(201, "Created (a draft); Location names it", headers=("Location", "ETag")),
        **problem_responses(401, 409, 413, 422, 429, 503),
    },
)
async def create_campaign(
    body: CampaignCreateRequest,
    response: Response,
    actor: CurrentActor,
    side: Side,
    idempotency_key: IdempotencyKey = None,
) -> CommandAccepted:
    result = await created_campaign(side, actor, body, idempotency_key)
    response.headers["Location"] = f"/campaigns/{result.id}"
    return _accepted(result, response)


async def created_campaign(
    side: CommandSide, actor: Actor, body: CampaignCreateRequest, idempotency_key: str | None
) -> CommandResult:
    """The create itself, for this route and the fast create (fast_commands.py) alike."""
    return await campaign_handlers.create_campaign(
        CreateCampaign(
            actor=actor,
            name=body.name,
            description=body.description,
            channel=body.channel,
            budget_amount=body.budget.amount,
            budget_currency=body.budget.currency,
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            tags=body.tags,
            idempotency_key=idempotency_key,
        ),
        side.unit_of_work(),
        live_cap=side.live_cap,
    )


@router.patch(
    "/{campaign_id}",
    summary="Change some fields (If-Match required)",
    responses={
        **ok(200, "Changed", headers=("ETag",)),
        **problem_responses(401, 404, 409, 412, 413, 422, 428, 503),
    },
    openapi_extra=REQUIRED_IF_MATCH,
)
async def update_campaign(
    campaign_id: str,
    body: CampaignPatchRequest,
    response: Response,
    actor: CurrentActor,
    version: RequiredVersion,
    side: Side,
) -> CommandAccepted:
    given = body.model_dump(exclude_unset=True)
    budget = given.get("budget")
    changes = CampaignChanges(
        name=given.get("name"),
        description=given.get("description"),
        channel=given.get("channel"),
        budget_amount=budget["amount"] if budget else None,
        budget_currency=budget["currency"] if budget else None,
        starts_at=given.get("starts_at"),
        ends_at=given.get("ends_at"),
        tags=given.get("tags"),
    )
    result = await campaign_handlers.update_campaign(
        UpdateCampaign(actor=actor, campaign_id=campaign_id, expected_version=version, changes=changes),
        side.unit_of_work(),
    )
    return _accepted(result, response)


def _lifecycle_route(action: str) -> None:
    async def change_status(
        campaign_id: str, response: Response, actor: CurrentActor, version: ExpectedVersion, side: Side
    ) -> CommandAccepted:
        result = await campaign_handlers.change_campaign_status(
            ChangeCampaignStatus(
                actor=actor, campaign_id=campaign_id, action=action, expected_version=version
            ),
            side.unit_of_work(),
        )
        return _accepted(result, response)

    change_status.__name__ = f"{action}_campaign"
    router.add_api_route(
        f"/{{campaign_id}}/{action}",
        change_status,
        methods=["POST"],
        summary=f"{action.capitalize()} the campaign (If-Match optional)",
        description=(
            "Lifecycle: draft → scheduled → active ⇄ paused → completed (draft → active by hand). "
            "Schedule: the scheduler activates the campaign at starts_at (at once if it has passed; "
            "409 once ends_at has passed); unschedule: back to draft. Activate by hand: 409 once "
            "ends_at has passed. An active or paused campaign is completed at its ends_at."
        ),
        responses={
            **ok(200, "Done", headers=("ETag",)),
            **problem_responses(401, 404, 409, 412, 413, 422, 503),
        },
    )


for _action in LIFECYCLE_ACTIONS:
    _lifecycle_route(_action)


@router.delete(
    "/{campaign_id}",
    status_code=204,
    response_class=Response,
    summary="Delete the campaign (from any state; If-Match optional)",
    responses={**ok(204, "Deleted"), **problem_responses(401, 404, 409, 412, 413, 422, 503)},
)
async def delete_campaign(
    campaign_id: str, actor: CurrentActor, version: ExpectedVersion, side: Side
) -> Response:
    await campaign_handlers.delete_campaign(
        DeleteCampaign(actor=actor, campaign_id=campaign_id, expected_version=version), side.unit_of_work()
    )
    return Response(status_code=204)
