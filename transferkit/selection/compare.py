"""``compare``: the selector's check: every quadrant recipe trained on one split, and the pick's regret.

The only part of :mod:`transferkit.selection` that trains: it runs :func:`transferkit.api.fit`
once per recipe, on the split and seed the selection was measured on, and reports what the
selector's pick gave away (its *regret*) and what selecting cost.

Example:
    >>> from transferkit.selection.compare import compare
    >>> compare("./pets", epochs=3).regret_points  # doctest: +SKIP
    0.0
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np

from transferkit import recipes as recipe_io
from transferkit.console import say
from transferkit.errors import TransferkitError
from transferkit.reporting.comparison import ComparisonResult, RecipeRun, write_comparison
from transferkit.reporting.diagnostics import load_predictions, load_validation_predictions
from transferkit.reporting.metrics import compute_metrics
from transferkit.selection.analyze import AnalysisResult, _default_name, _measure, _provisional_recipe
from transferkit.selection.quadrants import QUADRANTS
from transferkit.training.averaging import MEMBER_NAMES, check_partner, join_runs
from transferkit.training.calibration import uncalibrated


def compare(
    data: str | Path,
    *,
    recipes: tuple[str, ...] | list[str] = QUADRANTS,
    backbone: str | None = None,
    weights: str | None = None,
    image_size: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    out: str | Path = "runs",
    name: str | None = None,
    seed: int = 1337,
    verbose: int = 1,
) -> ComparisonResult:
    """Run the selector once, then train each recipe on the same split and seed, side by side.

    Args:
        data: as for :func:`analyze`.
        recipes: built-in recipe names or recipe files (or one comma-separated string); all must
            share one validation and one test fraction, so every recipe is tested on the same
            held-out images (the seed is shared too).
        backbone, weights, image_size, batch_size: override every recipe (as ``fit`` does).
        epochs: epochs for every phase of every recipe (default: each recipe's own schedule).
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
    recipes = tuple(recipes.split(",")) if isinstance(recipes, str) else tuple(recipes)  # "a,b" works too
    loaded = _loaded(recipes)
    first = loaded[0].data
    recipe = _provisional_recipe(
        backbone, weights, image_size, seed, first.validation_split, first.test_split
    )
    analysis = _measure(data, recipe, out, name or _default_name("compare", data), started, verbose)
    overrides = dict(
        backbone=backbone, weights=weights, image_size=image_size, epochs=epochs, batch_size=batch_size
    )
    runs: list[RecipeRun] = []
    trained: dict[str, RecipeRun] = {}  # what each recipe trains -> its row
    for entry, entry_recipe in zip(recipes, loaded, strict=True):
        key = _training(entry_recipe, seed, overrides)
        if key in trained:
            runs.append(_same_as(trained[key], entry_recipe, Path(str(entry)).stem, analysis, verbose))
        else:
            runs.append(trained.setdefault(key, _train_one(data, entry, analysis, seed, overrides, verbose)))
    runs = with_averaged_pick(tuple(runs), analysis.selection)
    if runs and runs[-1].recipe == AVERAGED:
        runs = (*runs[:-1], _joined(runs[-1], *_members(runs, analysis.selection), analysis, verbose))
    result = ComparisonResult(analysis.run_dir, analysis, runs, time.perf_counter() - started)
    write_comparison(result)
    say(verbose, "\n" + result.table())
    return result


def _loaded(recipes) -> list[recipe_io.Recipe]:
    """Load and check the recipes up front (names, files, one split) so no training is wasted on
    a typo."""
    if not recipes:
        raise TransferkitError(f"No recipes to compare. Give some of: {', '.join(QUADRANTS)}.")
    names = [Path(str(entry)).stem for entry in recipes]
    if len(set(names)) != len(names):
        raise TransferkitError(f"Recipes {names} repeat a name; each needs its own run folder.")
    if AVERAGED in names:
        raise TransferkitError(
            f"A recipe named {AVERAGED!r} would take the averaged pick's run folder; rename its file."
        )
    loaded = [recipe_io.load(entry) for entry in recipes]
    fractions = {(r.data.validation_split, r.data.test_split) for r in loaded}
    if len(fractions) > 1:
        raise TransferkitError(
            f"The recipes hold out different (validation, test) fractions {sorted(fractions)}; "
            "compare needs one split. Make data.validation_split and data.test_split agree."
        )
    return loaded


def _training(recipe: recipe_io.Recipe, seed: int, overrides: dict) -> str:
    """What ``recipe`` trains, as text: the recipe as its fit would resolve it, without its names.

    Two recipes with the same text train the same network on the same split and seed to the same
    weights (``large_similar`` and ``large_dissimilar`` do: one whole-network schedule serves both),
    so :func:`compare` trains it once. The strategy stays in only as the kind of network it builds
    (a truncation is cut where the selector measured; the whole-network strategies build one kind);
    phase names only label logs and history.
    """
    recipe = recipe_io.with_overrides(recipe, seed=seed, **overrides)
    kind = MEMBER_NAMES.get(recipe.strategy, recipe.strategy)
    phases = tuple(dataclasses.replace(phase, name=str(i)) for i, phase in enumerate(recipe.phases))
    return repr(dataclasses.replace(recipe, name="", description="", strategy=kind, phases=phases))


def _same_as(
    first: RecipeRun, recipe: recipe_io.Recipe, label: str, analysis: AnalysisResult, verbose
) -> RecipeRun:
    """The row of ``recipe`` (its run labelled ``label``), which trains exactly as ``first``'s did:
    ``first``'s figures and run folder."""
    say(
        verbose,
        f"\n=== {label} ===\nTrains exactly as {first.recipe} (the same phases, head, augmentation and "
        f"seed): not trained again; its figures are {first.recipe}'s ({first.run_dir}).",
    )
    return dataclasses.replace(
        first,
        recipe=label,
        strategy=recipe.strategy,
        picked=recipe.name == analysis.selection.quadrant,
        same_as=first.recipe,
    )


def _train_one(data, entry, analysis: AnalysisResult, seed, overrides, verbose) -> RecipeRun:
    from transferkit import api

    label = Path(str(entry)).stem
    say(verbose, f"\n=== {label} ===")
    with _PeakMemory() as memory:
        started = time.perf_counter()
        fit = api.fit(
            data, recipe=entry, seed=seed, out=analysis.run_dir, name=label, verbose=verbose, **overrides
        )
        seconds = time.perf_counter() - started
    top5 = fit.metrics.top5_accuracy
    low, high = fit.metrics.accuracy_interval
    return RecipeRun(
        label,
        fit.recipe.strategy,
        fit.recipe.name == analysis.selection.quadrant,
        fit.headline,
        float(fit.metrics.accuracy),
        low,
        high,
        float(fit.validation_metrics.accuracy),
        None if top5 is None else float(top5),
        seconds,
        memory.peak_mb,
        memory.increase_mb,
        max(p.trainable_params for p in fit.plan),
        sum(p.epochs for p in fit.plan),
        str(fit.run_dir),
    )


def with_averaged_pick(runs: tuple[RecipeRun, ...], selection) -> tuple[RecipeRun, ...]:
    """Where the pick averages two networks (``selection.partner``: the whole network and a
    truncation, or a truncation and the frozen base), the averaged model as one more row, the pick,
    computed from the two rows' held-out predictions.

    ``fit`` trains the same two networks (the same recipes, seed and split), so the mean of their
    ``predictions.npz`` probabilities, each taken back to before its own run's temperature, is what
    its averaged model scores: fit's averaged model puts its temperature after that mean
    (:mod:`transferkit.training.calibration`), fitted on validation images the members' runs did
    not save, and it ranks the classes as the mean does. Where the picked network is clearly ahead of
    its partner on the validation images (:func:`~transferkit.training.averaging.check_partner`,
    from each run's validation predictions), fit's model is the picked network alone, and so is the
    pick's row. Without both rows (or with a partner truncation cut elsewhere) no row is the pick:
    the pick was not trained, and the pick's recipe alone is not what fit trains.
    """
    if selection.partner is None:
        return runs
    whole, cut = _members(runs, selection)
    if whole is None or cut is None:
        return tuple(dataclasses.replace(r, picked=False) for r in runs)
    members = [load_predictions(r.run_dir) for r in (whole, cut)]
    if any(m is None for m in members) or members[0].paths != members[1].paths:
        return runs
    validation = [load_validation_predictions(r.run_dir) for r in (whole, cut)]
    if any(v is None for v in validation) or validation[0].paths != validation[1].paths:
        validation = None  # runs from before validation predictions were saved: no check, no figure
    else:
        by_member = {
            MEMBER_NAMES[r.strategy]: v.probabilities for r, v in zip((whole, cut), validation, strict=True)
        }
        if not check_partner(by_member, validation[0].labels).kept:  # fit keeps the picked network alone
            seconds = whole.seconds + cut.seconds  # fit trained both before it checked
            picked = dataclasses.replace(whole, recipe=AVERAGED, picked=True, seconds=seconds)
            return (*(dataclasses.replace(r, picked=False) for r in runs), picked)
    metrics = compute_metrics(_mean_of(members, (whole, cut)), members[0].labels, members[0].class_names)
    low, high = metrics.accuracy_interval
    validation_accuracy = None
    if validation is not None:  # a temperature does not change which class the mean picks
        mean = _mean_of(validation, (whole, cut))
        validation_accuracy = float(np.mean(mean.argmax(axis=1) == validation[0].labels))
    averaged = RecipeRun(
        AVERAGED,
        "average",
        True,
        whole.split,
        float(metrics.accuracy),
        low,
        high,
        validation_accuracy,
        None if metrics.top5_accuracy is None else float(metrics.top5_accuracy),
        whole.seconds + cut.seconds,
        max(whole.peak_rss_mb, cut.peak_rss_mb),
        max(whole.rss_increase_mb, cut.rss_increase_mb),
        whole.trainable_params + cut.trainable_params,
        whole.epochs + cut.epochs,
        f"{whole.run_dir} + {cut.run_dir}",
    )
    return (*(dataclasses.replace(r, picked=False) for r in runs), averaged)


AVERAGED = "averaged"  # compare's row (and run folder) for the averaged pick


def _members(runs, selection) -> tuple[RecipeRun | None, RecipeRun | None]:
    """The rows of the pick's two networks: its own recipe's, and its partner's (cut where the
    selector cut it); None for one not trained."""
    whole = next((r for r in runs if r.recipe == selection.quadrant), None)
    cut = next(
        (
            r
            for r in runs
            if r.recipe == selection.partner
            and (selection.partner_cut is None or _cut_of(r) == selection.partner_cut)
        ),
        None,
    )
    return whole, cut


def _joined(row: RecipeRun, whole: RecipeRun, cut: RecipeRun, analysis: AnalysisResult, verbose) -> RecipeRun:
    """The averaged pick's own run folder, ``<compare>/averaged``: the two networks compare trained,
    joined as ``fit`` joins them (:func:`~transferkit.training.averaging.join_runs`, then resumed:
    calibrated, evaluated and saved, nothing trained again), so that the pick is a model the user can
    predict with and export. Its row takes that run's figures (the same images as ``row``'s, which
    came from the members' saved predictions); its seconds stay the two fits' (what fit's averaged
    run trains; each fit also evaluated and saved its network, as the join does the average).

    Where the join fails (a full disk, say) the row stays as computed and says so, and the rows
    trained before it are kept.
    """
    from transferkit import api

    folder = Path(analysis.run_dir) / AVERAGED
    say(
        verbose,
        f"\n=== {AVERAGED} ===\nThe pick averages {whole.recipe} and {cut.recipe}: their two trained "
        f"networks, joined as fit joins them in {folder} (calibrated, evaluated and saved; nothing trains "
        "again).",
    )
    try:
        with _PeakMemory() as memory:
            selection = Path(analysis.run_dir) / "selection.json"
            join_runs(Path(whole.run_dir), Path(cut.run_dir), folder, selection)
            fit = api.resume(folder, verbose=verbose)
    except (TransferkitError, OSError) as error:
        say(verbose, f"Warning: the averaged pick's run folder could not be written ({error}).")
        return row
    top5 = fit.metrics.top5_accuracy
    low, high = fit.metrics.accuracy_interval
    return dataclasses.replace(
        row,
        accuracy=float(fit.metrics.accuracy),
        accuracy_low=low,
        accuracy_high=high,
        validation_accuracy=float(fit.validation_metrics.accuracy),
        top5_accuracy=None if top5 is None else float(top5),
        peak_rss_mb=max(row.peak_rss_mb, memory.peak_mb),
        run_dir=str(folder),
    )


def _mean_of(predictions, runs) -> np.ndarray:
    """The mean of the runs' saved probabilities, each taken back to before its run's temperature."""
    raw = [uncalibrated(p.probabilities, _temperature_of(r)) for p, r in zip(predictions, runs, strict=True)]
    return (raw[0] + raw[1]) / np.float32(2)


def _temperature_of(run: RecipeRun) -> dict | None:
    """The run's ``metrics.json`` ``calibration`` record (None without one)."""
    path = Path(run.run_dir) / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")).get("calibration") if path.exists() else None


def _cut_of(run: RecipeRun) -> str:
    return recipe_io.load(Path(run.run_dir) / "recipe.toml").backbone.cut


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
