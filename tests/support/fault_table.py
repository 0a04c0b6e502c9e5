"""The fault table: each fault test records one row; the session prints them all at its end."""

from __future__ import annotations

COLUMNS = ("fault", "events accepted", "events projected", "lost", "duplicates applied")
# The cluster fault tests (tests/chaos_cluster) also count dead letters, all of which would be
# the infrastructure's doing there: their traffic sends only valid commands.
CLUSTER_COLUMNS = (*COLUMNS, "dead-lettered (infra errors)")

ROWS: list[dict[str, object]] = []
CLUSTER_ROWS: list[dict[str, object]] = []


def record_fault(row: dict[str, object]) -> None:
    ROWS.append({column: row[column] for column in COLUMNS})


def format_table(rows: list[dict[str, object]], columns: tuple[str, ...] = COLUMNS) -> list[str]:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]

    def line(values: list[str]) -> str:
        cells = [
            v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return [line(list(columns)), rule, *(line([str(r[c]) for c in columns]) for r in rows)]
