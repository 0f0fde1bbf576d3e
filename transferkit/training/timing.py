"""Stage timings of a run: a stopwatch around each named stage, written as ``timings.json``.

Example:
    >>> stopwatch = Stopwatch()
    >>> with stopwatch.stage("build base"):
    ...     pass
    >>> [stage.name for stage in stopwatch.stages]
    ['build base']
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from transferkit.fileio import write_json

TIMINGS_FILE = "timings.json"
NESTING = " / "  # a stage inside another is named "outer / inner"


def steady_seconds(batch_seconds: Sequence[float]) -> float:
    """A pass's seconds as if its step had been traced before: the first batch, which traces it,
    counted as the median of the others. What a pass costs a run whose step is traced anyway (a fit
    traces its feature step for its augmented passes); 0.0 for one batch (no trace-free batch to go by).

    Example:
        >>> steady_seconds([2.5, 0.2, 0.3, 0.2])
        0.9
    """
    if len(batch_seconds) < 2:
        return 0.0
    rest = batch_seconds[1:]
    return round(sum(rest) + statistics.median(rest), 6)


class BatchClock:
    """The seconds of each item of ``items`` as a loop takes it: its loading and the loop's work on it.

    Example:
        >>> clock = BatchClock(range(3))
        >>> [item for item in clock], len(clock.seconds)
        ([0, 1, 2], 3)
    """

    def __init__(self, items: Iterable):
        self.items = items
        self.seconds: list[float] = []

    def __iter__(self) -> Iterator:
        last = time.perf_counter()
        for item in self.items:
            yield item
            now = time.perf_counter()
            self.seconds.append(now - last)
            last = now

    def steady_seconds(self) -> float:
        """:func:`steady_seconds` of the items timed so far."""
        return steady_seconds(self.seconds)


@dataclass(frozen=True)
class StageTime:
    """One finished stage: its name, wall seconds, how deep it ran inside other stages, and the CPU
    seconds the process spent in it (all threads; on a busy machine, steadier than wall time)."""

    name: str
    seconds: float
    depth: int = 0
    cpu_seconds: float = 0.0


class Stopwatch:
    """Wall time of a run's named stages, in the order they finished.

    Stages may nest; a nested stage is recorded as ``"outer / inner"`` and is part of its outer
    stage's time, so only the outermost stages add up to the run. Time spent outside every stage
    is reported as ``"other"``.
    """

    def __init__(self, before: float = 0.0) -> None:
        """``before``: the seconds a resumed run had taken before its stop, up to its last saved
        progress (:func:`transferkit.training.trainer.seconds_saved`); 0.0 for a new run."""
        self.before = before
        self.started = time.perf_counter()
        self.stages: list[StageTime] = []
        self._open: list[str] = []
        self.reused: dict[str, float] = {}

    def reuse(self, name: str, seconds: float) -> None:
        """Record that ``seconds`` of the stage ``name``'s work served a later stage, which would
        otherwise have done it (e.g. the selector's pass over the training images, which a frozen
        base's fit trains on): ``timings.json``'s ``"reused"``, so that what a stage added to the
        run can be told from what it took."""
        if seconds > 0:
            self.reused[name] = self.reused.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as the stage ``name`` (recorded even when the block raises).

        Args:
            name: a short, plain name, e.g. ``"build base"`` or ``"phase 1 'head': training"``.
        """
        full = NESTING.join([*self._open, name])
        self._open.append(name)
        begun, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self._open.pop()
            wall, cpu = time.perf_counter() - begun, time.process_time() - cpu
            self.stages.append(StageTime(full, wall, len(self._open), cpu))

    def elapsed(self) -> float:
        """Seconds since the stopwatch started."""
        return time.perf_counter() - self.started

    def run_seconds(self) -> float:
        """The run's seconds so far: those before its stop (if resumed) and this process's."""
        return self.before + self.elapsed()

    def totals(self) -> dict[str, float]:
        """Seconds per outermost stage name (repeated stages summed), in first-finished order,
        then ``"other"``: the time outside every stage."""
        totals: dict[str, float] = {}
        for stage in self.stages:
            if stage.depth == 0:
                totals[stage.name] = totals.get(stage.name, 0.0) + stage.seconds
        totals["other"] = max(0.0, self.elapsed() - sum(totals.values()))
        return totals

    def to_dict(self) -> dict:
        """``timings.json``'s record: every stage in order (nested ones too), the totals, the wall
        time, and any stage's ``"reused"`` seconds (:meth:`reuse`)."""
        record = {
            "seconds": round(self.elapsed(), 3),
            "totals": {name: round(seconds, 3) for name, seconds in self.totals().items()},
            "stages": [
                {
                    "name": s.name,
                    "seconds": round(s.seconds, 3),
                    "cpu_seconds": round(s.cpu_seconds, 3),
                    "depth": s.depth,
                }
                for s in self.stages
            ],
        }
        if self.reused:
            record["reused"] = {name: round(seconds, 3) for name, seconds in self.reused.items()}
        if self.before:
            record["before_the_stop"] = round(self.before, 3)
        return record

    def summary(self, smallest: float = 0.05) -> str:
        """One line: the outermost stages in order, each with its inner ones in brackets.

        E.g. ``Time: build base 1.2 s, selection 4.5 s (2.1 of it reused), phase 1 9.8 s (features 6.1,
        training 3.5), report 0.4 s (25.1 s)``.

        Args:
            smallest: stages shorter than this many seconds are left out of the line (not the file).
        """
        parts = []
        for name, seconds in self.totals().items():
            if seconds < smallest:
                continue
            inner = [f"{n} {s:.1f}" for n, s in self._inner(name).items() if s >= smallest]
            if self.reused.get(name, 0.0) >= smallest:  # what a later stage used instead of doing it
                inner.append(f"{self.reused[name]:.1f} of it reused")
            parts.append(f"{name} {seconds:.1f} s" + (f" ({', '.join(inner)})" if inner else ""))
        return f"Time: {', '.join(parts)} ({self.elapsed():.1f} s)"

    def _inner(self, outer: str) -> dict[str, float]:
        """Seconds per stage directly inside the outermost stage ``outer`` (repeats summed)."""
        inner: dict[str, float] = {}
        for stage in self.stages:
            if stage.depth == 1 and stage.name.startswith(outer + NESTING):
                name = stage.name[len(outer + NESTING) :]
                inner[name] = inner.get(name, 0.0) + stage.seconds
        return inner

    def write(self, run_dir: Path) -> Path:
        """Write ``timings.json`` into ``run_dir`` (atomically) and return its path."""
        path = Path(run_dir) / TIMINGS_FILE
        write_json(path, self.to_dict())
        return path
