"""A campaign held by the replay's fold window (`_Folded`): compact, yet the write it ends in is
the live projector's plan for the same read and events."""

from __future__ import annotations

import orjson

from projectors.adapters.campaigns_projection import StoredForm
from projectors.domain.campaign_plan import StoredCampaign, plan_campaign
from projectors.replay.adapters.campaign_folder import _Folded
from readmodels.campaigns import fold_campaign
from readmodels.stored_documents import stored_form
from tests.support.factories import envelope

CAMPAIGN = "c-1"


def created() -> dict[str, object]:
    state = fold_campaign([envelope("CampaignCreated", aggregate_id=CAMPAIGN)])
    assert state is not None
    return state


def folded(entry: _Folded, *events_of_batches: list) -> None:  # type: ignore[type-arg]
    for events in events_of_batches:
        given = entry.current()
        entry.fold(given, plan_campaign(given, events))


def test_a_stored_campaign_folds_and_writes_as_the_live_projector_plans_it() -> None:
    fields = created()
    form = StoredForm(1, stored_form(orjson.dumps(fields)), False, "u-1", {}, 0)
    entry = _Folded.of(form)
    activated = envelope("CampaignActivated", aggregate_id=CAMPAIGN, version=2)
    paused = envelope("CampaignPaused", aggregate_id=CAMPAIGN, version=3)
    folded(entry, [activated], [paused])

    plan, read = entry.write()
    live = plan_campaign(StoredCampaign(1, fields, False, "u-1", {}), [activated, paused])
    assert entry.changed
    assert plan.before == live.before
    assert (plan.version, plan.state, plan.deleted, plan.owner, plan.parked) == (
        live.version,
        live.state,
        live.deleted,
        live.owner,
        live.parked,
    )
    assert (read.stored, read.parked_count) == (plan.before, 0)


def test_a_campaign_no_event_changed_writes_its_document_as_it_was() -> None:
    fields = created()
    entry = _Folded.of(StoredForm(1, stored_form(orjson.dumps(fields)), False, "u-1", {}, 0))
    folded(entry, [envelope("CampaignCreated", aggregate_id=CAMPAIGN, version=1)])  # a duplicate

    plan, _ = entry.write()
    assert not entry.changed
    assert plan.before.state == fields
    # The same object: the guarded write then leaves the document be.
    assert plan.state is plan.before.state


def test_a_new_campaign_writes_from_nothing_to_its_folded_state() -> None:
    entry = _Folded.of(StoredForm(0, None, False, "", {}, 0))
    events = [
        envelope("CampaignCreated", aggregate_id=CAMPAIGN),
        envelope("CampaignActivated", aggregate_id=CAMPAIGN, version=2),
    ]
    folded(entry, events[:1], events[1:])

    plan, _ = entry.write()
    assert plan.before == StoredCampaign()
    assert plan.state == plan_campaign(StoredCampaign(), events).state
    assert plan.state is not None and plan.state["status"] == "active"
    assert plan.version == 2


def test_a_gap_keeps_the_event_parked_until_the_write() -> None:
    fields = created()
    entry = _Folded.of(StoredForm(1, stored_form(orjson.dumps(fields)), False, "u-1", {}, 0))
    later = envelope("CampaignPaused", aggregate_id=CAMPAIGN, version=3)
    folded(entry, [later])

    plan, _ = entry.write()
    assert entry.changed  # the version stayed, the parked entries did not
    assert plan.version == 1
    assert list(plan.parked) == [3]


def test_held_campaigns_of_one_owner_share_its_id() -> None:
    owner = "".join(["owner-", "42"])  # built at run time: not interned by the compiler
    copies = [_Folded.of(StoredForm(1, None, False, "".join(["owner-", "42"]), {}, 0)) for _ in range(2)]
    assert copies[0].owner == owner
    assert copies[0].owner is copies[1].owner
