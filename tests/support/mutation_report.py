"""The mutation report: each target's score and every surviving mutant, from mutmut's last run.

`make mutation` runs `mutmut run` (configured in pyproject.toml's [tool.mutmut]) and then this
module, which reads the results mutmut left in mutants/ and writes tests/mutation-report.md.
A mutant counts as killed when a test failed, timed out or the type check refused it; a mutant
no selected test reaches counts against the score like a survivor. The exit status is 1 when a
target scores below --min-score.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

# target -> the source files it covers (paths as in [tool.mutmut] only_mutate)
TARGETS: dict[str, tuple[str, ...]] = {
    "command domain: campaign": ("command_api/domain/campaign.py",),
    "command domain: user": ("command_api/domain/user.py",),
    "command domain: refresh_token": ("command_api/domain/refresh_token.py",),
    "command domain: aggregate, errors, currencies": (
        "command_api/domain/aggregate.py",
        "command_api/domain/errors.py",
        "command_api/domain/currencies.py",
    ),
    "projection planner": ("projectors/domain/campaign_plan.py",),
    "events: envelope": ("events/envelope.py",),
    "events: upcasting": ("events/upcasting.py",),
    "events: serialization": ("events/serialization.py",),
    "events: types": ("events/types.py",),
}
# Survivors read and judged equivalent: no input the code can receive tells them apart.
EQUIVALENT: dict[str, str] = {
    "command_api.domain.user.x_password_problems__mutmut_17": (
        "partition and rpartition differ only for an address with two '@', refused before this check"
    ),
    "projectors.domain.campaign_plan.x_plan_campaign__mutmut_19": "a campaign's state always has owner_id",
    "projectors.domain.campaign_plan.x_plan_campaign__mutmut_21": "a campaign's state always has owner_id",
    "events.envelope.x_utc_now__mutmut_2": "a naive local now converts to the same UTC instant",
    "events.serialization.x__describe__mutmut_9": "an envelope's errors always have a location",
    "events.serialization.x__describe__mutmut_10": "an envelope's errors always have a location",
}
KILLED = {1, 3, 24, -24, 36, 37, 152, 255}
NO_TESTS = {5, 33}
NOT_COUNTED = {34, None}  # skipped, or not checked


@dataclass
class Score:
    killed: int = 0
    survived: list[str] = field(default_factory=list)
    untested: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.killed + len(self.survived) + len(self.untested)

    @property
    def percent(self) -> float:
        return 100.0 * self.killed / self.total if self.total else 100.0


def load_scores(root: Path) -> dict[str, Score]:
    scores = {target: Score() for target in TARGETS}
    for target, paths in TARGETS.items():
        for path in paths:
            meta = root / "mutants" / f"{path}.meta"
            if not meta.exists():
                raise SystemExit(f"{meta} is missing: run `mutmut run` first")
            for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
                if code in KILLED:
                    scores[target].killed += 1
                elif code in NO_TESTS:
                    scores[target].untested.append(name)
                elif code == 0:
                    scores[target].survived.append(name)
                elif code not in NOT_COUNTED:
                    scores[target].survived.append(name)  # suspicious or crashed: not a kill
    return scores


def changed_lines(mutant: str, source: str) -> str:
    """The mutant's -/+ lines (mutmut's own diff, without its context)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(mutant, path=source)
    lines = [line for line in diff.splitlines() if line[:1] in "-+" and line[:3] not in ("---", "+++")]
    return "\n".join(lines)


def render(scores: dict[str, Score], min_score: float) -> str:
    out = [
        "# Mutation report",
        "",
        "Written by `make mutation` (mutmut, configured in pyproject.toml). "
        f"Goal: at least {min_score:.0f}% on each target.",
        "",
        "| target | mutants | killed | survived | no test | score |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for target, score in scores.items():
        out.append(
            f"| {target} | {score.total} | {score.killed} | {len(score.survived)} "
            f"| {len(score.untested)} | {score.percent:.1f}% |"
        )
    for target, score in scores.items():
        leftover = score.survived + score.untested
        if not leftover:
            continue
        out += ["", f"## Survivors: {target}", ""]
        for mutant in leftover:
            source = next(p for p in TARGETS[target] if mutant.startswith(p[:-3].replace("/", ".") + "."))
            kind = "no test reaches it" if mutant in score.untested else "survived"
            if mutant in EQUIVALENT:
                kind += f"; equivalent: {EQUIVALENT[mutant]}"
            out += [f"- `{mutant}` ({kind})", "", "  ```diff"]
            out += [f"  {line}" for line in changed_lines(mutant, source).splitlines()]
            out += ["  ```"]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("tests/mutation-report.md"))
    parser.add_argument("--min-score", type=float, default=90.0)
    args = parser.parse_args()
    scores = load_scores(Path.cwd())
    args.out.write_text(render(scores, args.min_score))
    low = {t: s for t, s in scores.items() if s.percent < args.min_score}
    for target, score in scores.items():
        print(f"{score.percent:6.1f}%  {target}  ({len(score.survived) + len(score.untested)} left)")
    print(f"report: {args.out}")
    if low:
        print(f"below {args.min_score:.0f}%: {', '.join(low)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
