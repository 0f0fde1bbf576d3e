"""``analyze``: the selector on its own: one forward pass, the evidence written, no training.

The base, image size and split are those of ``fit(data, size="auto")``, so the decision is the
one ``fit`` would make. :mod:`transferkit.selection.compare` checks it by training.

Example:
    >>> from transferkit.selection.analyze import analyze
    >>> result = analyze("./pets")  # doctest: +SKIP
    >>> result.selection.quadrant, result.run_dir  # doctest: +SKIP
    ('small_similar', PosixPath('runs/analyze-pets-20250101-120000'))
"""

from __future__ import annotations

import hashlib
import shlex
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from transferkit import recipes as recipe_io
from transferkit.backbones.registry import get_backbone
from transferkit.backbones.weights import build_base
from transferkit.console import say
from transferkit.data.card import DatasetCard
from transferkit.data.loading import load_data
from transferkit.errors import TransferkitError
from transferkit.fileio import require_writable_folder, write_json
from transferkit.reporting import runfolder
from transferkit.reporting.selection_figure import plot_selection
from transferkit.selection.decision import Selection
from transferkit.selection.quadrants import PROVISIONAL
from transferkit.selection.rules import CutScore


@dataclass(frozen=True)
class AnalysisResult:
    """What :func:`analyze` returns: the decision, the data it was made on, and where it was written."""

    selection: Selection
    card: DatasetCard
    run_dir: Path
    backbone: str
    weights_source: str
    split: dict[str, Any]  # seed, fractions, sizes, digests of the validation and test files
    selection_seconds: float  # forward pass + probes (what auto-selection adds to a fit)
    seconds: float  # the whole call: load, build the base, measure, write
    weights: str = "imagenet"  # as asked for ("imagenet", "random" or a file): what compare must build

    def compare_command(self) -> str:
        """The ``compare`` that trains the candidates on what was measured here (data, backbone,
        image size, seed)."""
        weights = "" if self.weights == "imagenet" else f" --weights {shlex.quote(self.weights)}"
        return (
            f"transferkit compare --data {shlex.quote(str(self.card.source))} --backbone {self.backbone}"
            f"{weights} --image-size {self.selection.image_size} --seed {self.split['seed']}"
        )

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
        if s.partner:  # fit trains a second network and averages the two
            cut += f", averaged with {s.partner}" + (f" at {s.partner_cut}" if s.partner_cut else "")
        lines.append(f"\nChosen: {s.quadrant} -> {s.recipe}{cut} (confidence {s.confidence:.2f})")
        lines += [f"  - {reason}" for reason in s.reasons]
        if s.close_call:
            lines.append(f"Warning: close call. `{self.compare_command()}` trains the candidates.")
        lines.append(f"Selection took {self.selection_seconds:.1f} s ({self.seconds:.1f} s in all).")
        files = ("dataset_card.json", "selection.json", "selection.png")
        return "\n".join(lines + [f"Wrote {self.run_dir / f}" for f in files])


def analyze(
    data: str | Path,
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
    say(verbose, "\n" + result.summary())
    return result


def _provisional_recipe(
    backbone, weights, image_size, seed, validation_split=None, test_split=None
) -> recipe_io.Recipe:
    overrides = dict(
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        validation_split=validation_split,
        test_split=test_split,
    )
    return recipe_io.with_overrides(recipe_io.load_builtin(PROVISIONAL), seed=seed, **overrides)


def _as_asked(weights: str) -> str:
    """``weights`` for a command run from anywhere: a file as an absolute path."""
    return weights if weights in ("imagenet", "random") else str(Path(weights).expanduser().resolve())


def _measure(data, recipe, out, name, started, verbose) -> AnalysisResult:
    """Load, build the base, run the selector; then (only then) create the folder and write."""
    import keras

    from transferkit.selection.measure import probe_quadrant

    require_writable_folder(out)  # before the scan and the measuring, not after them
    keras.utils.set_random_seed(recipe.seed)  # the same random init as fit's when weights="random"
    splits = load_data(  # the held-out test split is carved as fit carves it: the selector never sees it
        data,
        validation_split=recipe.data.validation_split,
        test_split=recipe.data.test_split,
        seed=recipe.seed,
    )
    spec = get_backbone(recipe.backbone.name)
    base, source = build_base(spec, recipe.backbone.image_size or spec.default_size, recipe.backbone.weights)
    say(verbose, f"Measuring transferability on {spec.name} ({len(spec.cut_points)} cut points)")
    measure_started = time.perf_counter()
    selection, _ = probe_quadrant(splits, spec, base, recipe, size="auto", similar=None, verbose=0)
    measure_seconds = time.perf_counter() - measure_started
    run_dir = runfolder.new_run_dir(out, data, "analyze", name)
    write_json(run_dir / "dataset_card.json", splits.card.to_dict())
    write_json(run_dir / "selection.json", selection.to_dict())
    plot_selection(selection, run_dir / "selection.png")
    seconds = time.perf_counter() - started
    split = _split_record(splits, recipe)
    return AnalysisResult(
        selection,
        splits.card,
        run_dir,
        spec.name,
        source,
        split,
        measure_seconds,
        seconds,
        weights=_as_asked(recipe.backbone.weights),
    )


def _split_record(splits, recipe: recipe_io.Recipe) -> dict[str, Any]:
    """How the data was split, with digests of the validation and test files: equal digests, equal splits."""
    rows = zip(splits.val.paths, splits.val.labels, strict=True)
    digest = hashlib.sha256("\n".join(f"{path}\t{label}" for path, label in rows).encode()).hexdigest()
    return {
        "seed": recipe.seed,
        "validation_split": recipe.data.validation_split,
        "test_split": recipe.data.test_split,
        "num_train": len(splits.train),
        "num_val": len(splits.val),
        "num_test": splits.holdout.num_test,
        "val_sha256": digest,
        "test_sha256": splits.holdout.sha256,
        "test_note": splits.holdout.note,
    }


def load_selection(path: str | Path) -> Selection:
    """Read a ``selection.json`` back into a :class:`~transferkit.selection.rules.Selection`.

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


def _default_name(kind: str, data: str) -> str:
    return f"{kind}-{Path(str(data).rstrip('/')).name or 'data'}-{datetime.now():%Y%m%d-%H%M%S}"
