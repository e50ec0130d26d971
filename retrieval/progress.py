"""Progress of a build on stderr: stage lines, and a bar with an ETA weighted by work, not by item count.

On a terminal, a rich bar; otherwise (a log file, a pipe, CI) a plain line every PLAIN_EVERY seconds, because
rich draws nothing there until the end and a long build would look hung.
"""
from __future__ import annotations

import sys
import time

PLAIN_EVERY = 10.0  # seconds between lines when stderr is not a terminal


def say(enabled: bool, message: str) -> None:
    """One stage line on stderr (`enabled` is the build's progress setting)."""
    if enabled:
        print(message, file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class WorkBar:
    """`with WorkBar(on, label, n_items, total_work) as advance: advance(items, work)`.

    The ETA is work left / work rate: embedding goes longest text first, so counting items would promise
    the end far too early (or, at the start, far too late).
    """

    def __init__(self, enabled: bool, label: str, items: int, work: float, unit: str = "chunks"):
        self.enabled, self.label, self.items, self.work, self.unit = enabled, label, items, max(work, 1e-9), unit
        self.done_items, self.done_work = 0, 0.0
        self.bar = self.task = None
        self.start = self.last_line = time.monotonic()

    def __enter__(self):
        if not self.enabled:
            return lambda items, work: None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.fields[done]}/{task.fields[items]} " + self.unit),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=False)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.work, done=0, items=self.items)
        else:
            say(True, f"{self.label}: 0/{self.items} {self.unit}")
        return self._advance

    def _advance(self, items: int, work: float) -> None:
        self.done_items += items
        self.done_work += work
        if self.bar is not None:
            self.bar.update(self.task, advance=work, done=self.done_items)
            return
        now = time.monotonic()
        if now - self.last_line >= PLAIN_EVERY and self.done_items < self.items:
            self.last_line = now
            say(True, self.line(now))

    def line(self, now: float) -> str:
        """The plain-text progress line: done, share, elapsed, and the time left at the rate so far."""
        elapsed = now - self.start
        share = self.done_work / self.work
        left = elapsed * (1 - share) / share if share > 0 else None
        eta = f", about {_clock(left)} left" if left is not None else ""
        return (f"{self.label}: {self.done_items}/{self.items} {self.unit} ({share:.0%}), "
                f"{_clock(elapsed)} elapsed{eta}")

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
        elif self.enabled and exc[0] is None:
            say(True, f"{self.label}: {self.done_items}/{self.items} {self.unit} in "
                      f"{_clock(time.monotonic() - self.start)}")


class Ticker:
    """Counts items read from a long iterator: `first` when the first one arrives (so a bad input fails with
    its one error line alone), then the count every PLAIN_EVERY seconds."""

    def __init__(self, enabled: bool, label: str, first: str = ""):
        self.enabled, self.label, self.first, self.count = enabled, label, first, 0
        self.last = time.monotonic()

    def wrap(self, items):
        for item in items:
            self.count += 1
            if self.count == 1 and self.first:
                say(self.enabled, self.first)
            if self.enabled and time.monotonic() - self.last >= PLAIN_EVERY:
                self.last = time.monotonic()
                say(True, f"{self.label}: {self.count} so far")
            yield item
