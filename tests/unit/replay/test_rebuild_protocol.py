"""The rebuild and verify protocols on in-memory ports: order of steps, and no update lost."""

from __future__ import annotations

import pytest

from events import EventEnvelope
from projectors.replay.application.passes import run_pass
from projectors.replay.application.ports import EventSource, GenerationWriter, Progress
from projectors.replay.application.rebuild import RebuildOptions, plan_rebuild, rebuild
from projectors.replay.application.verify import VerifyOptions, verify
from projectors.replay.domain.plan import CatchUpPolicy
from projectors.replay.domain.tally import ProjectionTally
from tests.integration.read_side.workload import Aggregate, new_campaign
from tests.unit.replay.fakes import (
    LiveProjector,
    MemoryGenerations,
    MemoryProgress,
    MemorySource,
    memory_writers,
)


def campaigns(count: int) -> list[Aggregate]:
    result = []
    for n in range(count):
        campaign = new_campaign(f"owner-{n}")
        campaign.then("CampaignActivated")
        result.append(campaign)
    return result


def world(
    events: list[EventEnvelope],
) -> tuple[list[str], MemorySource, MemoryGenerations, LiveProjector]:
    journal: list[str] = []
    source = MemorySource(journal, log=list(events))
    generations = MemoryGenerations(journal)
    live = LiveProjector(generations, "campaigns")
    live.project(events)
    return journal, source, generations, live


async def no_sleep(seconds: float) -> None:
    return None


async def test_the_swap_follows_the_catch_up_passes_and_one_more_pass_follows_the_swap() -> None:
    aggregates = campaigns(4)
    journal, source, generations, _ = world([e for a in aggregates for e in a.events])
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        journal.append(f"sleep {seconds:g}")
        slept.append(seconds)

    await rebuild(
        ["campaigns"],
        source,
        generations,
        memory_writers(generations),
        MemoryProgress(),
        RebuildOptions(grace_seconds=7, policy=CatchUpPolicy(quiet_events=0, max_passes=3)),
        sleep,
    )

    assert journal == [
        "lock",
        "clear campaigns.2",  # leftovers of an interrupted rebuild, if any
        "pass 1",  # the full pass
        "pass 2 (catch-up)",  # quiet: nothing new, so the only one
        "writer shared",  # from here on the live projector writes the new generation too
        "swap campaigns -> campaigns.2",
        "pass 3",  # exact, its end taken after the swap
        "sleep 7",
        "clear campaigns.1",
        "unlock",
    ]


async def test_a_full_pass_given_in_the_options_reads_the_first_pass_only() -> None:
    aggregates = campaigns(3)
    journal, source, generations, _ = world([e for a in aggregates for e in a.events])
    labels: list[str] = []

    async def split_pass(
        source: EventSource, writer: GenerationWriter, progress: Progress, label: str
    ) -> int:
        # What the partitioned pass does, minus the processes: its own share of the pass.
        labels.append(label)
        journal.append("full pass (split)")
        return await run_pass(source, writer, progress, label)

    report = await rebuild(
        ["campaigns"],
        source,
        generations,
        memory_writers(generations),
        MemoryProgress(),
        RebuildOptions(grace_seconds=0, full_pass=split_pass),
        no_sleep,
    )

    assert labels == ["replaying memory"]  # not the catch-ups, nor the pass after the swap
    assert journal[journal.index("full pass (split)") + 1] == "pass 1"
    assert report.events == sum(len(a.events) for a in aggregates)
    assert generations.model("campaigns.2").applied == {a.aggregate_id: a.version for a in aggregates}


def test_tallies_of_two_writers_of_one_generation_add_up() -> None:
    ours = ProjectionTally(applied=5, duplicates=1, parked=2, refused=1, refusals=["a"])
    theirs = ProjectionTally(applied=7, duplicates=0, parked=1, refused=6, refusals=list("bcdef"))

    ours.merge(theirs)

    assert (ours.applied, ours.duplicates, ours.parked, ours.refused) == (12, 1, 3, 7)
    assert ours.refusals == ["a", "b", "c", "d", "e"]  # a few to print, as one writer keeps


async def test_events_the_live_projector_put_in_the_old_generation_at_the_swap_reach_the_new_one() -> None:
    aggregates = campaigns(3)
    _, source, generations, live = world([e for a in aggregates for e in a.events])

    def race() -> None:
        # Between the last catch-up pass and the swap: new events reach the log and the live
        # projector applies them to the old generation, which is still the one named.
        late = [aggregates[0].then("CampaignPaused"), aggregates[1].then("CampaignPaused")]
        source.log += late
        live.project(late)

    generations.before_swap = race

    await rebuild(
        ["campaigns"],
        source,
        generations,
        memory_writers(generations),
        MemoryProgress(),
        RebuildOptions(grace_seconds=0),
        no_sleep,
    )
    # After the swap the live projector writes the new generation; its next event finds the
    # one before it, applied by the pass after the swap.
    after = [aggregates[0].then("CampaignActivated")]
    source.log += after
    live.project(after)

    new = generations.model("campaigns.2")
    assert new.applied == {a.aggregate_id: a.version for a in aggregates}
    assert not any(new.parked.values())


async def test_the_dry_run_plan_counts_events_by_the_projections_aggregate_types() -> None:
    aggregates = campaigns(3)
    _, source, generations, _ = world([e for a in aggregates for e in a.events])
    generations.pointers["campaigns"] = "campaigns.4"

    plans = await plan_rebuild(
        ["campaigns", "users"],
        {"campaigns": frozenset({"campaign"}), "users": frozenset({"user"})},
        source,
        generations,
    )

    assert [(p.projection, p.live_generation, p.new_generation, p.events) for p in plans] == [
        ("campaigns", "campaigns.4", "campaigns.5", 6),
        ("users", "users.1", "users.2", 0),
    ]
    assert source.passes == 0


async def test_verify_rechecks_a_difference_before_calling_it_drift() -> None:
    aggregates = campaigns(2)
    journal, source, generations, _ = world([e for a in aggregates for e in a.events])
    generations.drift["campaigns.1"] = 1  # differs once, as under traffic

    report = await verify(
        ["campaigns"],
        source,
        generations,
        generations,
        memory_writers(generations),
        MemoryProgress(),
        VerifyOptions(attempts=3, settle_seconds=0),
        no_sleep,
    )

    assert not report.drift
    assert source.passes == 2  # the full pass, then one re-check after the difference
    assert [line for line in journal if line.startswith("clear")] == [f"clear {report_scratch(journal)}"]


async def test_verify_reports_lasting_drift_with_the_differing_keys_and_clears_its_scratch() -> None:
    aggregates = campaigns(2)
    _, source, generations, _ = world([e for a in aggregates for e in a.events])
    generations.model("campaigns.1").applied[aggregates[0].aggregate_id] = 9

    report = await verify(
        ["campaigns"],
        source,
        generations,
        generations,
        memory_writers(generations),
        MemoryProgress(),
        VerifyOptions(attempts=2, settle_seconds=0),
        no_sleep,
    )

    assert report.drift
    diff = report.projections[0].diff
    assert diff is not None and diff.changed == [aggregates[0].aggregate_id]
    assert not [g for g in generations.models if ".verify-" in g]


async def test_verify_clears_its_scratch_generation_when_the_source_fails() -> None:
    aggregates = campaigns(2)
    _, source, generations, _ = world([e for a in aggregates for e in a.events])
    source.fail_on_pass = 2

    with pytest.raises(ConnectionError):
        await verify(
            ["campaigns"],
            source,
            generations,
            generations,
            memory_writers(generations),
            MemoryProgress(),
            VerifyOptions(policy=CatchUpPolicy(quiet_events=0)),
            no_sleep,
        )

    assert not [g for g in generations.models if ".verify-" in g]


def report_scratch(journal: list[str]) -> str:
    cleared = [line.removeprefix("clear ") for line in journal if line.startswith("clear ")]
    assert len(cleared) == 1 and ".verify-" in cleared[0]
    return cleared[0]
