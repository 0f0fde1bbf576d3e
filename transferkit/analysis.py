"""Measured strategy selection on its own (``analyze``) and checked against training (``compare``).

``analyze`` answers "which recipe?" with one forward pass (see :mod:`transferkit.selection`) and
writes the evidence; ``compare`` trains the candidate recipes on the same split with the same
seed and reports what the selector's pick gave away (its *regret*) and what selecting cost.

Example:
    >>> from transferkit import analysis
    >>> result = analysis.analyze("./pets")  # doctest: +SKIP
    >>> result.selection.quadrant, result.run_dir  # doctest: +SKIP
    ('small_similar', PosixPath('runs/analyze-pets-20250101-120000'))
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from transferkit import recipes as recipe_io
from transferkit import runfolder
from transferkit.backbones import get_backbone
from transferkit.card import DatasetCard
from transferkit.comparison import ComparisonResult, RecipeRun, write_comparison
from transferkit.data import load_data
from transferkit.errors import TransferkitError
from transferkit.fileio import write_json
from transferkit.selector import QUADRANT_RECIPES, CutScore, Selection, plot_selection
from transferkit.weights import build_base

QUADRANTS = tuple(QUADRANT_RECIPES)  # small_similar, small_dissimilar, large_similar, large_dissimilar
PROVISIONAL_RECIPE = "small_similar"  # what fit(size="auto") measures with: same split, same base


@dataclass(frozen=True)
class AnalysisResult:
    """What :func:`analyze` returns: the decision, the data it was made on, and where it was written."""

    selection: Selection
    card: DatasetCard
    run_dir: Path
    backbone: str
    weights_source: str
    split: dict[str, Any]  # seed, validation_split, sizes, digest of the validation files
    selection_seconds: float  # forward pass + probes (what auto-selection adds to a fit)
    seconds: float  # the whole call: load, build the base, measure, write

    def summary(self) -> str:
        """The dataset card, the per-cut scores, the decision with its reasons, the files written."""
        s = self.selection
        lines = [self.card.summary(), f"\nTransferability on {self.backbone} ({self.weights_source}):"]
        lines.append(f"  {'cut':<24}{'dim':>6}  {'probe accuracy':<16}{'LogME':>8}")
        lines += [
            f"  {c.cut:<24}{c.feature_dim:>6}  {c.probe_accuracy:.3f} ± {c.probe_stderr:.3f}  {c.logme:>8.3f}"
            for c in s.scores
        ]
        cut = f" at {s.cut_point}" if s.cut_point else ""
        lines.append(f"\nChosen: {s.quadrant} -> {s.recipe}{cut} (confidence {s.confidence:.2f})")
        lines += [f"  - {reason}" for reason in s.reasons]
        if s.close_call:
            lines.append(
                f"Warning: close call. `transferkit compare --data {self.card.source}` trains the candidates."
            )
        lines.append(f"Selection took {self.selection_seconds:.1f} s ({self.seconds:.1f} s in all).")
        files = ("dataset_card.json", "selection.json", "selection.png")
        return "\n".join(lines + [f"Wrote {self.run_dir / f}" for f in files])


def analyze(
    data: str,
    *,
    backbone: str | None = None,
    weights: str | None = None,
    image_size: int | None = None,
    out: str | Path = "runs",
    name: str | None = None,
    seed: int = 1337,
    verbose: int = 1,
) -> AnalysisResult:
    """Measure which quadrant recipe suits ``data``, without training; write the evidence.

    The base, image size and split are those of ``fit(data, size="auto")`` with the same
    overrides and seed, so the decision is the one ``fit`` would make.

    Args:
        data: a folder of class subfolders (or train/ val/ splits), or ``tfds:NAME[:split]``.
        backbone, weights, image_size: override the ``small_similar`` recipe's defaults.
        out: parent folder; results go to ``out/<name or analyze-<data>-<timestamp>>``.
        name: folder name.
        seed: the split, sample and probe seed.
        verbose: 0 silent; otherwise the card, progress and :meth:`AnalysisResult.summary`.

    Returns:
        An :class:`AnalysisResult`; the folder holds dataset_card.json, selection.json, selection.png.

    Example:
        >>> analyze("./pets", backbone="tiny", weights="random").selection.quadrant  # doctest: +SKIP
        'small_similar'
    """
    started = time.perf_counter()
    recipe = _provisional_recipe(backbone, weights, image_size, seed)
    result = _measure(data, recipe, out, name or _default_name("analyze", data), started, verbose)
    _say(verbose, "\n" + result.summary())
    return result


def _provisional_recipe(backbone, weights, image_size, seed, validation_split=None) -> recipe_io.Recipe:
    overrides = dict(
        backbone=backbone, weights=weights, image_size=image_size, validation_split=validation_split
    )
    return recipe_io.with_overrides(recipe_io.load_builtin(PROVISIONAL_RECIPE), seed=seed, **overrides)


def _measure(data, recipe, out, name, started, verbose) -> AnalysisResult:
    """Load, build the base, run the selector; then (only then) create the folder and write."""
    import keras

    from transferkit.selection import measure_quadrant

    keras.utils.set_random_seed(recipe.seed)  # the same random init as fit's when weights="random"
    splits = load_data(data, validation_split=recipe.data.validation_split, seed=recipe.seed)
    spec = get_backbone(recipe.backbone.name)
    base, source = build_base(spec, recipe.backbone.image_size or spec.default_size, recipe.backbone.weights)
    _say(verbose, f"Measuring transferability on {spec.name} ({len(spec.cut_points)} cut points)")
    measure_started = time.perf_counter()
    selection = measure_quadrant(splits, spec, base, recipe, size="auto", similar=None, verbose=0)
    measure_seconds = time.perf_counter() - measure_started
    run_dir = runfolder.new_run_dir(out, data, "analyze", name)
    write_json(run_dir / "dataset_card.json", splits.card.to_dict())
    write_json(run_dir / "selection.json", selection.to_dict())
    plot_selection(selection, run_dir / "selection.png")
    seconds = time.perf_counter() - started
    split = _split_record(splits, recipe)
    return AnalysisResult(selection, splits.card, run_dir, spec.name, source, split, measure_seconds, seconds)


def _split_record(splits, recipe: recipe_io.Recipe) -> dict[str, Any]:
    """How the data was split, with a digest of the validation files: equal digests, equal splits."""
    rows = zip(splits.val.paths, splits.val.labels, strict=True)
    digest = hashlib.sha256("\n".join(f"{path}\t{label}" for path, label in rows).encode()).hexdigest()
    return {
        "seed": recipe.seed,
        "validation_split": recipe.data.validation_split,
        "num_train": len(splits.train),
        "num_val": len(splits.val),
        "val_sha256": digest,
    }


def load_selection(path: str | Path) -> Selection:
    """Read a ``selection.json`` back into a :class:`~transferkit.selector.Selection`.

    Example:
        >>> load_selection("runs/analyze-pets-20250101-120000/selection.json").quadrant  # doctest: +SKIP
        'small_similar'
    """
    import json

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        scores = tuple(CutScore(**score) for score in data.pop("scores"))
        return Selection(**{**data, "reasons": tuple(data["reasons"]), "scores": scores})
    except (KeyError, TypeError) as error:
        raise TransferkitError(f"{str(path)!r} is not a transferkit selection.json ({error}).") from None


def compare(
    data: str,
    *,
    recipes: tuple[str, ...] | list[str] = QUADRANTS,
    backbone: str | None = None,
    weights: str | None = None,
    image_size: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    time_budget: float | None = None,
    out: str | Path = "runs",
    name: str | None = None,
    seed: int = 1337,
    verbose: int = 1,
) -> ComparisonResult:
    """Run the selector once, then train each recipe on the same split and seed, side by side.

    Args:
        data: as for :func:`analyze`.
        recipes: built-in recipe names or recipe files (or one comma-separated string); all must
            share one validation split.
        backbone, weights, image_size, batch_size: override every recipe (as ``fit`` does).
        epochs: epochs for every phase of every recipe (default: each recipe's own schedule).
        time_budget: not supported: frozen recipes train on cached features and run several times
            faster per epoch than fine-tuning, so a fair budget needs a per-recipe measurement
            that is not built yet. Give ``epochs`` instead.
        out: parent folder; results go to ``out/<name or compare-<data>-<timestamp>>``, one run
            folder per recipe inside, next to the selection's files.
        name: folder name.
        seed: one seed for the split, the selection and every fit.
        verbose: 0 silent; otherwise progress and :meth:`ComparisonResult.table`.

    Returns:
        A :class:`ComparisonResult`; writes comparison.json, comparison.csv and comparison.png.

    Example:
        >>> compare("./pets", epochs=3).regret_points  # doctest: +SKIP
        0.0
    """
    started = time.perf_counter()
    if time_budget is not None:
        raise TransferkitError(
            f"time_budget={time_budget!r} is not supported yet; give epochs=N per phase instead."
        )
    recipes = tuple(recipes.split(",")) if isinstance(recipes, str) else tuple(recipes)  # "a,b" works too
    validation_split = _shared_validation_split(recipes)
    recipe = _provisional_recipe(backbone, weights, image_size, seed, validation_split)
    analysis = _measure(data, recipe, out, name or _default_name("compare", data), started, verbose)
    overrides = dict(
        backbone=backbone, weights=weights, image_size=image_size, epochs=epochs, batch_size=batch_size
    )
    runs = tuple(_train_one(data, entry, analysis, seed, overrides, verbose) for entry in recipes)
    result = ComparisonResult(analysis.run_dir, analysis, runs, time.perf_counter() - started)
    write_comparison(result)
    _say(verbose, "\n" + result.table())
    return result


def _shared_validation_split(recipes) -> float:
    """Check the recipes up front (names, files, one split) so no training is wasted on a typo."""
    if not recipes:
        raise TransferkitError(f"No recipes to compare. Give some of: {', '.join(QUADRANTS)}.")
    loaded = [recipe_io.load(entry) for entry in recipes]
    names = [Path(str(entry)).stem for entry in recipes]
    if len(set(names)) != len(names):
        raise TransferkitError(f"Recipes {names} repeat a name; each needs its own run folder.")
    splits = {r.data.validation_split for r in loaded}
    if len(splits) > 1:
        raise TransferkitError(
            f"The recipes hold out different validation fractions {sorted(splits)}; "
            "compare needs one split. Make data.validation_split agree."
        )
    return splits.pop()


def _train_one(data, entry, analysis: AnalysisResult, seed, overrides, verbose) -> RecipeRun:
    from transferkit import api

    label = Path(str(entry)).stem
    _say(verbose, f"\n=== {label} ===")
    with _PeakMemory() as memory:
        started = time.perf_counter()
        fit = api.fit(
            data, recipe=entry, seed=seed, out=analysis.run_dir, name=label, verbose=verbose, **overrides
        )
        seconds = time.perf_counter() - started
    top5 = fit.metrics.top5_accuracy
    return RecipeRun(
        label,
        fit.recipe.strategy,
        fit.recipe.name == analysis.selection.quadrant,
        float(fit.metrics.accuracy),
        None if top5 is None else float(top5),
        seconds,
        memory.peak_mb,
        memory.increase_mb,
        max(p.trainable_params for p in fit.plan),
        sum(p.epochs for p in fit.plan),
        str(fit.run_dir),
    )


class _PeakMemory:
    """Samples this process's resident set size on a thread every 50 ms while the block runs."""

    def __enter__(self) -> _PeakMemory:
        import psutil  # a dependency of tensorflow-datasets

        self._process = psutil.Process()
        self._start = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.peak_mb, self.increase_mb = self._peak / 2**20, (self._peak - self._start) / 2**20


def _default_name(kind: str, data: str) -> str:
    return f"{kind}-{Path(data.rstrip('/')).name or 'data'}-{datetime.now():%Y%m%d-%H%M%S}"


def _say(verbose: int, message: str) -> None:
    if verbose:
        print(message, flush=True)
