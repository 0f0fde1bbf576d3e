"""The record of a ``compare`` run: one row per trained recipe, the table, and its files.

Each row leads with the accuracy on the held-out test split (the same images for every recipe)
and its 95% interval, validation accuracy beside it; the regret is computed on the test split.
Only when the data was too small to hold a test split out are both figures validation ones,
and ``split`` says so.

:func:`transferkit.compare.compare` fills a :class:`ComparisonResult`; :func:`write_comparison`
writes ``comparison.json``, ``comparison.csv`` and ``comparison.png`` atomically.

Example:
    >>> from transferkit.selection.compare import compare
    >>> result = compare("./pets", epochs=3)  # doctest: +SKIP
    >>> print(result.table())  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import shlex
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferkit.errors import setting
from transferkit.fileio import atomic_path, write_json, write_text
from transferkit.reporting.metrics import difference_halfwidth

if TYPE_CHECKING:
    from transferkit.compare import AnalysisResult

MEMORY_NOTE = (
    "peak MB: resident memory of the whole process, sampled every 50 ms during that fit; it includes "
    "TensorFlow itself and whatever earlier fits left allocated, so read it as an upper bound. "
    "+MB: the rise over the fit's start."
)


@dataclass(frozen=True)
class RecipeRun:
    """One recipe trained by :func:`compare`."""

    recipe: str
    strategy: str
    picked: bool  # the selector chose this recipe
    split: str  # where `accuracy` was measured: "test" (held out), or "validation" when there was none
    accuracy: float  # top-1 on that split
    accuracy_low: float  # its 95% Wilson interval
    accuracy_high: float
    validation_accuracy: float | None  # top-1 on the validation split early stopping watched
    top5_accuracy: float | None  # on `split`; None with 5 classes or fewer
    seconds: float  # wall time of its fit(), everything included (build, train, evaluate, save)
    peak_rss_mb: float  # highest whole-process resident memory sampled during the fit
    rss_increase_mb: float  # that peak minus the resident memory when the fit started
    trainable_params: int  # the most parameters any phase trains
    epochs: int  # planned, summed over phases (early stopping may end a phase sooner)
    run_dir: str
    same_as: str = ""  # an earlier row whose recipe trains exactly as this one: one fit, its figures


@dataclass(frozen=True)
class ComparisonResult:
    """What :func:`compare` returns; ``to_dict()`` is what comparison.json holds."""

    run_dir: Path
    analysis: AnalysisResult
    runs: tuple[RecipeRun, ...]
    seconds: float  # the whole compare, selection included

    @property
    def picked(self) -> str:
        """The row of the selector's pick: its quadrant recipe (e.g. ``small_similar``), or
        ``averaged`` where it averages two (:func:`transferkit.selection.compare.with_averaged_pick`)."""
        return next((run.recipe for run in self.runs if run.picked), self.analysis.selection.quadrant)

    @property
    def split(self) -> str:
        """The split every row's ``accuracy`` (and the regret) is measured on: "test" or "validation"."""
        return self.runs[0].split if self.runs else "test"

    @property
    def best(self) -> RecipeRun:
        """The run with the highest accuracy on :attr:`split` (the first one on a tie)."""
        return max(self.runs, key=lambda run: run.accuracy)

    @property
    def regret_points(self) -> float | None:
        """Best accuracy minus the pick's on :attr:`split`, in percentage points; None when the pick
        was not trained."""
        pick = next((run for run in self.runs if run.picked), None)
        return None if pick is None else 100 * (self.best.accuracy - pick.accuracy)

    @property
    def scored_images(self) -> int:
        """How many images each row's ``accuracy`` was measured on (the :attr:`split`'s)."""
        return int(self.analysis.split.get("num_test" if self.split == "test" else "num_val") or 0)

    @property
    def regret_halfwidth(self) -> float | None:
        """The 95% half-width of :attr:`regret_points` (:func:`difference_halfwidth`)."""
        pick = next((run for run in self.runs if run.picked), None)
        if pick is None:
            return None
        return difference_halfwidth(self.best.accuracy, pick.accuracy, self.scored_images)

    @property
    def selection_fraction(self) -> float:
        """The selector's measuring time as a fraction of the whole compare."""
        return self.analysis.selection_seconds / self.seconds

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: the selection, the split, regret, timings and one dict per run."""
        s = self.analysis.selection
        return {
            "data": self.analysis.card.source,
            "split": self.analysis.split,
            "picked": self.picked,
            "selection": {
                "quadrant": s.quadrant,
                "recipe": s.recipe,
                "cut_point": s.cut_point,
                "partner": s.partner,
                "partner_cut": s.partner_cut,
                "confidence": s.confidence,
                "close_call": s.close_call,
            },
            "accuracy_split": self.split,
            "best": self.best.recipe,
            "regret_points": self.regret_points,
            "regret_halfwidth": self.regret_halfwidth,
            "scored_images": self.scored_images,
            "selection_seconds": self.analysis.selection_seconds,
            "analysis_seconds": self.analysis.seconds,
            "seconds": self.seconds,
            "selection_fraction": self.selection_fraction,
            "memory_note": MEMORY_NOTE,
            "runs": [asdict(run) for run in self.runs],
        }

    def table(self) -> str:
        """Side by side, the pick marked with ``*``, then regret and selection cost."""
        tested = self.split == "test"  # else the headline is validation, and no second column for it
        head, beside = ("test acc", "val acc") if tested else ("val acc", "")
        rows = [
            f"{'recipe':<20}{'strategy':<11}{head:>9}{'95% CI':>13}{beside:>9}{'top-5':>7}"
            f"{'seconds':>9}{'peak MB':>9}{'+MB':>7}{'trainable':>11}"
        ]
        for r in self.runs:
            top5 = f"{r.top5_accuracy:.3f}" if r.top5_accuracy is not None else "-"
            validation = f"{r.validation_accuracy:.3f}" if r.validation_accuracy is not None else "-"
            interval = f"{r.accuracy_low:.2f}-{r.accuracy_high:.2f}"
            rows.append(
                f"{r.recipe + (' *' if r.picked else ''):<20}{r.strategy:<11}{r.accuracy:>9.3f}{interval:>13}"
                f"{validation if tested else '':>9}{top5:>7}{r.seconds:>9.1f}{r.peak_rss_mb:>9.0f}"
                f"{r.rss_increase_mb:>+7.0f}{r.trainable_params:>11,}"
            )
        rows += [
            f"{r.recipe} trains exactly as {r.same_as}: one fit, its figures in both rows."
            for r in self.runs
            if r.same_as
        ]
        s = self.analysis.selection
        averaged = f" averaged with {s.partner}" if s.partner else ""
        averaged += f" at {s.partner_cut!r}" if s.partner_cut else ""
        rows.append(
            f"* selector's pick: {s.quadrant}{averaged} (confidence {s.confidence:.2f}"
            f"{', close call' if s.close_call else ''}). Best: {self.best.recipe} {self.best.accuracy:.3f}."
        )
        regret, half = self.regret_points, self.regret_halfwidth
        on = "held-out test accuracy" if tested else "validation accuracy (no test split could be held out)"
        if regret is None and s.partner:
            partner = s.partner + (f" (cut at {s.partner_cut!r})" if s.partner_cut else "")
            both = setting("recipes", f"{s.quadrant},{s.partner}")
            rows.append(
                f"Regret: not measured. The pick averages {s.quadrant} with {partner}, and the two were "
                f"not both trained here: compare them together ({both})."
            )
        elif regret is None:
            rows.append("Regret: the pick was not among the trained recipes.")
        else:
            noise = ": within noise" if regret <= half else ""  # nan (no images) compares False
            rows.append(
                f"Regret of the pick: {regret:.1f} percentage points of {on} "
                f"(+/- {half:.1f} at 95% on {self.scored_images} images{noise})."
            )
        if self.picked == "averaged":
            pick = next(r for r in self.runs if r.picked)
            if Path(pick.run_dir).is_dir():
                rows.append(f"The averaged pick's run folder (the model fit would give): {pick.run_dir}")
            else:  # its folder could not be written: the row averages the two members' saved predictions
                source = shlex.quote(self.analysis.card.source)
                rows.append(
                    "The averaged pick has no run folder of its own (its row averages the two above): "
                    f"`transferkit fit --data {source}` trains it as one model."
                )
        rows.append(
            f"Selection took {self.analysis.selection_seconds:.1f} s = {100 * self.selection_fraction:.1f}% "
            f"of the whole compare ({self.seconds:.1f} s)."
        )
        return "\n".join(rows + [MEMORY_NOTE])


def write_comparison(result: ComparisonResult) -> tuple[Path, Path, Path]:
    """Write comparison.json, comparison.csv and comparison.png into ``result.run_dir``, atomically.

    Example:
        >>> write_comparison(compare("./pets", epochs=3))  # doctest: +SKIP
    """
    folder = result.run_dir
    write_json(folder / "comparison.json", result.to_dict())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(RecipeRun)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(run) for run in result.runs)
    write_text(folder / "comparison.csv", buffer.getvalue())
    return (
        folder / "comparison.json",
        folder / "comparison.csv",
        plot_comparison(result, folder / "comparison.png"),
    )


def plot_comparison(result: ComparisonResult, path: str | Path) -> Path:
    """Grouped bars per recipe: test accuracy with its 95% interval (validation when there is no test
    split; left axis) and wall time (right axis); the selector's pick is outlined in red and named
    on the axis. PNG, written atomically."""
    import numpy as np
    from matplotlib.patches import Patch

    from transferkit.reporting.figures import new_figure  # no pyplot: no global backend switch

    runs = result.runs
    fig = new_figure(figsize=(max(6.0, 1.7 * len(runs) + 2), 4.2), layout="constrained")
    ax = fig.subplots()
    time_ax = ax.twinx()
    x, width = np.arange(len(runs)), 0.38
    errors = [[r.accuracy - r.accuracy_low for r in runs], [r.accuracy_high - r.accuracy for r in runs]]
    accuracy = ax.bar(
        x - width / 2, [r.accuracy for r in runs], width, yerr=errors, capsize=3, color="tab:blue"
    )
    seconds = time_ax.bar(
        x + width / 2, [r.seconds for r in runs], width, color="tab:orange", label="wall time (s)"
    )
    for index, run in enumerate(runs):
        if run.picked:
            for bar in (accuracy[index], seconds[index]):
                bar.set_edgecolor("red")
                bar.set_linewidth(2.5)
    ax.set_xticks(x, [r.recipe + ("\n(selector's pick)" if r.picked else "") for r in runs])
    ax.set_ylim(0, 1.05)
    label = f"{result.split} accuracy (whiskers: 95% interval)"
    ax.set_ylabel(label)
    time_ax.set_ylabel("wall time of the fit (s)")
    legend = [
        Patch(color="tab:blue", label=label),
        Patch(color="tab:orange", label="wall time (s)"),
        Patch(facecolor="none", edgecolor="red", linewidth=2, label="selector's pick"),
    ]
    fig.legend(handles=legend, loc="outside lower center", ncols=3, fontsize=8)  # below: covers no bar
    regret = result.regret_points
    fig.suptitle(
        f"pick {result.picked}: regret "
        + ("n/a (not trained)" if regret is None else f"{regret:.1f} points of {result.split} accuracy")
        + f"\nselection {100 * result.selection_fraction:.1f}% of the time",
        fontsize=10,
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
