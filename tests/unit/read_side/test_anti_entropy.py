"""Anti-entropy's decisions (fakes for the read models, the write side and the log; a given clock)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from events import EventEnvelope
from projectors.application.anti_entropy import MAX_REPAIRS_PER_STEP, AntiEntropy, AntiEntropyRepair
from projectors.domain.outcomes import ApplyResult, EventOutcome, Outcome
from tests.integration.read_side.workload import Aggregate, new_campaign, new_user

GRACE = 5.0


@dataclass
class FakeProjection:
    """Applies in order, guarded by version, like the Redis projections."""

    name: str
    held: dict[tuple[str, str], int]
    prefix: str = "t"
    applied: list[tuple[str, int]] = field(default_factory=list)

    async def apply(self, redis: Any, generation: str, envelopes: Sequence[EventEnvelope]) -> ApplyResult:
        outcomes = []
        for e in envelopes:
            key = (e.aggregate_type, e.aggregate_id)
            last = self.held.get(key, 0)
            if e.aggregate_version <= last:
                outcomes.append(EventOutcome(Outcome.DUPLICATE))
            elif e.aggregate_version == last + 1:
                self.held[key] = e.aggregate_version
                self.applied.append((e.aggregate_id, e.aggregate_version))
                outcomes.append(EventOutcome(Outcome.APPLIED))
            else:
                outcomes.append(EventOutcome(Outcome.PARKED))
        return ApplyResult(outcomes)


@dataclass
class FakeReadModels:
    projections: dict[str, FakeProjection]
    reports: list[tuple[str, str]] = field(default_factory=list)

    async def live_generation(self, projection: Any) -> str:
        return f"{projection.name}.1"

    async def versions(self, projection: Any, generation: str, kind: str, ids: Sequence[str]) -> list[int]:
        held = self.projections[projection.name].held
        return [held.get((kind, i), 0) for i in ids]

    async def record_repair(self, projection: Any, repair: AntiEntropyRepair) -> None:
        self.reports.append(
            (projection.name, f"{repair.aggregate} v{repair.from_version} -> v{repair.to_version}")
        )


@dataclass
class FakeWriteSide:
    aggregates: list[Aggregate]

    async def pages(self, kind: str, size: int) -> AsyncGenerator[list[tuple[str, int]], None]:
        rows = [(a.aggregate_id, a.version) for a in self.aggregates if a.kind == kind]
        for start in range(0, len(rows), size):
            yield rows[start : start + size]


@dataclass
class FakeLog:
    aggregates: list[Aggregate]
    unpublished: set[tuple[str, int]] = field(default_factory=set)

    async def aggregate_events(
        self, kind: str, aggregate_id: str, up_to_version: int | None = None, *, published_only: bool = False
    ) -> list[EventEnvelope]:
        [aggregate] = [a for a in self.aggregates if a.aggregate_id == aggregate_id]
        return [
            e
            for e in aggregate.events
            if (up_to_version is None or e.aggregate_version <= up_to_version)
            and not (published_only and (aggregate_id, e.aggregate_version) in self.unpublished)
        ]


def system(
    aggregates: list[Aggregate], batch: int = 2
) -> tuple[AntiEntropy, dict[str, FakeProjection], FakeLog]:
    """Every read model at the write side's version to begin with."""
    projections = {
        name: FakeProjection(
            name, {(a.kind, a.aggregate_id): a.version for a in aggregates if a.kind in kinds}
        )
        for name, kinds in (("campaigns", {"campaign"}), ("users", {"user"}), ("stats", {"campaign", "user"}))
    }
    log = FakeLog(aggregates)
    checker = AntiEntropy(
        list(projections.values()),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        FakeReadModels(projections),
        FakeWriteSide(aggregates),
        log,
        batch,
        GRACE,
    )
    return checker, projections, log


async def sweep(checker: AntiEntropy, now: float, behind: frozenset[str] = frozenset()) -> list[Any]:
    repairs = []
    while True:
        step = await checker.step(now, behind)
        repairs.extend(step.repairs)
        if step.sweep_done:
            return repairs


def workload() -> list[Aggregate]:
    owner = new_user()
    campaigns = [new_campaign(owner.aggregate_id) for _ in range(5)]
    for campaign in campaigns[:3]:
        campaign.then("CampaignActivated")
    return [owner, *campaigns]


async def test_read_models_at_the_write_sides_versions_are_left_alone() -> None:
    checker, projections, _ = system(workload())
    assert await sweep(checker, 0) == []
    assert await sweep(checker, 100) == []
    assert all(not p.applied for p in projections.values())


async def test_a_read_model_behind_is_repaired_from_the_log_only_after_the_grace() -> None:
    aggregates = workload()
    checker, projections, _ = system(aggregates)
    campaign = aggregates[1]
    projections["campaigns"].held[("campaign", campaign.aggregate_id)] = 1  # lost its v2
    assert await sweep(checker, 0) == []  # maybe in flight: a suspect
    assert await sweep(checker, GRACE - 0.1) == []
    [repair] = await sweep(checker, GRACE)
    assert (repair.projection, repair.from_version, repair.to_version) == ("campaigns", 1, 2)
    assert projections["campaigns"].applied == [(campaign.aggregate_id, 2)]
    assert checker.rebuilds == set()  # the state was there: nothing left behind beside it


async def test_a_read_model_that_caught_up_meanwhile_is_not_repaired() -> None:
    aggregates = workload()
    checker, projections, _ = system(aggregates)
    key = ("campaign", aggregates[1].aggregate_id)
    projections["campaigns"].held[key] = 1
    await sweep(checker, 0)
    projections["campaigns"].held[key] = 2  # Kafka brought it
    assert await sweep(checker, GRACE) == []


async def test_events_not_published_yet_are_left_to_kafka() -> None:
    aggregates = workload()
    checker, projections, log = system(aggregates)
    campaign = aggregates[1]
    projections["campaigns"].held[("campaign", campaign.aggregate_id)] = 1
    log.unpublished.add((campaign.aggregate_id, 2))
    await sweep(checker, 0)
    assert await sweep(checker, GRACE) == []
    assert projections["campaigns"].applied == []


async def test_no_repair_while_the_projections_consumers_have_a_backlog() -> None:
    aggregates = workload()
    checker, projections, _ = system(aggregates)
    projections["campaigns"].held[("campaign", aggregates[1].aggregate_id)] = 1
    await sweep(checker, 0)
    assert await sweep(checker, GRACE, frozenset({"campaigns"})) == []
    assert await sweep(checker, GRACE + 1) == []  # the grace started again
    assert len(await sweep(checker, 2 * GRACE)) == 1


async def test_a_campaign_state_gone_altogether_is_applied_from_v1_and_the_projection_rebuilt() -> None:
    aggregates = workload()
    checker, projections, _ = system(aggregates)
    campaign = aggregates[1]
    del projections["campaigns"].held[("campaign", campaign.aggregate_id)]
    await sweep(checker, 0)
    [repair] = await sweep(checker, GRACE)
    assert (repair.from_version, repair.to_version) == (0, 2)  # readable again at once
    assert checker.rebuilds == {"campaigns"}  # its index entries may be left behind


async def test_a_stats_contribution_gone_altogether_is_recounted_not_added_again() -> None:
    aggregates = workload()
    checker, projections, _ = system(aggregates)
    del projections["stats"].held[("campaign", aggregates[2].aggregate_id)]
    await sweep(checker, 0)
    assert await sweep(checker, GRACE) == []
    assert projections["stats"].applied == []  # the counters may still hold it
    assert checker.rebuilds == {"stats"}


async def test_users_are_compared_in_the_users_and_stats_projections() -> None:
    aggregates = workload()
    user = aggregates[0]
    user.then("UserLoggedIn")
    checker, projections, _ = system(aggregates)
    projections["users"].held[("user", user.aggregate_id)] = 1
    projections["stats"].held[("user", user.aggregate_id)] = 1
    await sweep(checker, 0)
    repairs = await sweep(checker, GRACE)
    assert sorted(r.projection for r in repairs) == ["stats", "users"]


@pytest.mark.parametrize(
    ("batch", "lost", "per_step"), [(200, MAX_REPAIRS_PER_STEP + 7, 50), (1000, 257, 250)]
)
async def test_a_large_loss_is_repaired_a_bounded_number_a_step(batch: int, lost: int, per_step: int) -> None:
    owner = new_user()
    aggregates: list[Aggregate] = [owner]
    for _ in range(lost):
        campaign = new_campaign(owner.aggregate_id)
        campaign.then("CampaignActivated")
        aggregates.append(campaign)
    checker, projections, _ = system(aggregates, batch=batch)
    for campaign in aggregates[1:]:
        projections["campaigns"].held[("campaign", campaign.aggregate_id)] = 1
    await sweep(checker, 0)
    first = await checker.step(GRACE)
    assert len(first.repairs) == per_step  # a quarter of a page, and never fewer than 50
    await sweep(checker, GRACE)
    assert all(projections["campaigns"].held[("campaign", c.aggregate_id)] == 2 for c in aggregates[1:])


async def test_a_sweep_walks_every_page_of_both_aggregate_types_then_starts_again() -> None:
    aggregates = workload()
    checker, _, _ = system(aggregates, batch=2)
    steps = []
    while True:
        step = await checker.step(0)
        steps.append(step)
        if step.sweep_done:
            break
    assert sum(s.aggregates for s in steps) == len(aggregates)
    # 5 campaigns in the campaigns and stats projections, 1 user in the users and stats ones.
    assert sum(s.keys_checked for s in steps) == 5 * 2 + 1 * 2
    assert (await checker.step(0)).aggregates == 2  # the next sweep begins
