"""The replay's progress on a terminal: one rich bar per pass with events, events/s and time left."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class EventsPerSecondColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} events/s" if speed else "- events/s", style="progress.data.speed")


class RichProgress:
    """The `Progress` port on a rich console (stderr: stdout keeps the report)."""

    def __init__(self, console: Console) -> None:
        self.bars = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            EventsPerSecondColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._task: TaskID | None = None
        self._done = 0
        self._total: int | None = None

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._finish()
        self.bars.stop()

    def start_pass(self, label: str, expected: int | None) -> None:
        self._finish()
        self._done, self._total = 0, expected
        self._task = self.bars.add_task(label, total=expected)

    def advance(self, events: int) -> None:
        if self._task is None:
            return
        self._done += events
        if self._total is not None:
            # A Kafka pass reads what a partition holds past its snapshot end: the total grows.
            self._total = max(self._total, self._done)
        self.bars.update(self._task, completed=self._done, total=self._total)

    def say(self, message: str) -> None:
        self.bars.console.print(message)

    def _finish(self) -> None:
        if self._task is not None:
            self.bars.update(self._task, completed=self._done, total=self._done)
            self._task = None
