"""The trained head against a logistic regression on the very same cached features, split by split.

The selector scores a cut with a cross-validated linear probe on a training sample; the trained
head is scored on the held-out test split. Those two numbers are not comparable (different images,
n of 50-100 test images gives about +/-13 points). This script compares like with like: for each
data set it runs ``transferkit.fit(folder, recipe=RECIPE)`` (for ``small_dissimilar`` the cut is
the selector's measured one), rebuilds the fitted classifier's feature extractor, takes the clean
training features the head phase caches (the ordered training split, no augmentation), and scores
on the validation and test splits:

- ``logreg``: ``StandardScaler -> LogisticRegression(C=1, max_iter=1000)``, the selector's probe
  (:func:`transferkit.selection.transferability.linear_probe`), trained on all training features;
- ``logreg_best_c``: the same with C chosen on the validation split (its test figure is fair, its
  validation figure is not);
- ``head``: the head ``fit`` trained (SGD on cached, maybe augmented features, early stopping).

Usage (outside the test suite; tuning sets only while tuning):

    python benchmarks/head_vs_probe.py --datasets font_families_mpl icon_themes --per-class 150
    python benchmarks/head_vs_probe.py --datasets lfw_faces --recipe small_similar --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass(frozen=True)
class Row:
    """One data set: the head and the logistic regressions on the same features, per split."""

    dataset: str
    recipe: str
    seed: int
    cut: str
    feature_dim: int
    train_images: int
    val_images: int
    test_images: int
    probe_cv: float  # the selector's 5-fold probe on the training features
    logreg_val: float
    logreg_test: float
    logreg_best_c: float
    logreg_best_c_val: float
    logreg_best_c_test: float
    head_val: float
    head_test: float
    head_epochs: int
    augmentation: str  # "kept" | "dropped" | "not measured"
    fit_seconds: float
    resplits: dict | None = None  # head variant -> mean (val, test) over re-splits (--resplits)


def logistic(c: float):
    """The selector's probe as a classifier: standardise, then multinomial L-BFGS logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))


def split_features(result, splits) -> dict[str, tuple]:
    """``split -> (features, labels)`` through the fitted classifier's extractor, clean, in file order."""
    from transferkit.backbones.registry import get_backbone
    from transferkit.backbones.weights import build_base
    from transferkit.data.loading import make_dataset
    from transferkit.training.features import extract_features, feature_step
    from transferkit.training.model import build_classifier, truncate

    recipe = result.recipe
    spec = get_backbone(recipe.backbone.name)
    size = recipe.backbone.image_size or spec.default_size
    base, _ = build_base(spec, size, recipe.backbone.weights)
    if recipe.strategy == "truncate":
        base = truncate(base, recipe.backbone.cut)
    classifier = build_classifier(spec, base, len(splits.class_names), recipe.head)
    classifier.model.set_weights(result.model.get_weights())  # the base is frozen: the same features
    step, dim = feature_step(classifier.extractor), int(classifier.extractor.output.shape[-1])
    batch = recipe.data.batch_size
    return {
        name: extract_features(step, make_dataset(part, size, batch), feature_dim=dim, verbose=0)
        for name, part in (("train", splits.train), ("val", splits.val), ("test", splits.test))
    }


def compare_on_features(features: dict[str, tuple]) -> dict[str, float]:
    """The logistic regressions' accuracies on validation and test, and the cross-validated probe."""
    from transferkit.selection.transferability import linear_probe

    (x, y), (xv, yv), (xt, yt) = features["train"], features["val"], features["test"]
    figures = {"probe_cv": linear_probe(x, y)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter
        scores = {}
        for c in C_GRID:
            model = logistic(c).fit(x, y)
            scores[c] = (float(model.score(xv, yv)), float(model.score(xt, yt)))
    best = max(C_GRID, key=lambda c: (scores[c][0], -abs(math.log10(c))))  # ties: nearest C=1
    figures.update(
        logreg_val=scores[1.0][0],
        logreg_test=scores[1.0][1],
        logreg_best_c=best,
        logreg_best_c_val=scores[best][0],
        logreg_best_c_test=scores[best][1],
    )
    return figures


def resplit_heads(features: dict[str, tuple], recipe, seeds, rates) -> dict[str, tuple[float, float]]:
    """Mean (validation, test) accuracy per head variant over seeded stratified re-splits.

    All the images' clean features are pooled and split again per seed in the recipe's
    proportions; on each split the head is trained as a clean head phase trains it (standardised,
    the recipe's dropout, its first phase's epochs and patience, early stopping on validation
    loss; no augmentation, no augmentation check) from a random start and from the logistic
    start, at each rate in ``rates``, beside the probe's logistic regression (C=1).
    One feature pass, many splits: the spread of one split's figures is +/- 5-13 points.
    """
    from sklearn.model_selection import train_test_split

    x = np.concatenate([features[part][0] for part in ("train", "val", "test")])
    y = np.concatenate([features[part][1] for part in ("train", "val", "test")])
    variants = {f"{init} {rate:g}": (init, rate) for init in ("random", "logistic") for rate in rates}
    scores = {name: [] for name in (*variants, "logreg C=1")}
    for seed in seeds:
        data = recipe.data
        xr, xt, yr, yt = train_test_split(x, y, test_size=data.test_split, stratify=y, random_state=seed)
        xs, xv, ys, yv = train_test_split(
            xr, yr, test_size=data.validation_split, stratify=yr, random_state=seed
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = logistic(1.0).fit(xs, ys)
        scores["logreg C=1"].append((model.score(xv, yv), model.score(xt, yt)))
        for name, (init, rate) in variants.items():
            scores[name].append(train_head((xs, ys), (xv, yv), (xt, yt), recipe, init, rate, seed))
    return {name: tuple(np.mean(values, axis=0)) for name, values in scores.items()}


def train_head(train, validation, test, recipe, init: str, rate: float, seed: int) -> tuple[float, float]:
    """One head trained on clean cached features as the head phase trains it: (val, test) accuracy."""
    import dataclasses

    import keras

    from transferkit.training.callbacks import Reseed
    from transferkit.training.features import CachedFeatures, EpochSetter
    from transferkit.training.head_init import initialise_head
    from transferkit.training.head_phase import standardise_head
    from transferkit.training.model import build_head
    from transferkit.training.optimizers import compile_classifier, phase_optimizer

    (x, y), (_, yv), (_, yt) = train, validation, test
    num_classes = int(max(y.max(), yv.max(), yt.max())) + 1
    keras.utils.set_random_seed(seed)
    head = build_head(x.shape[1], num_classes, recipe.head)
    standardise_head(head, x)  # as the trainer does
    if init == "logistic":
        initialise_head(head, x, y, validation)
    phase = dataclasses.replace(recipe.phases[0], learning_rate=rate)
    data = CachedFeatures(x[None], y, recipe.data.batch_size, seed)
    optimizer = phase_optimizer(phase, learning_rate=rate, steps_per_epoch=len(data))
    compile_classifier(head, optimizer, num_classes, recipe.head.label_smoothing)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=phase.patience or phase.epochs, restore_best_weights=True
    )
    callbacks = [EpochSetter(data), Reseed(seed), stop]
    head.fit(data, epochs=phase.epochs, validation_data=validation, callbacks=callbacks, verbose=0)
    return tuple(float((head.predict(a, verbose=0).argmax(1) == b).mean()) for a, b in (validation, test))


def run_one(name: str, args: argparse.Namespace, work: Path) -> Row:
    import transferkit
    from transferkit.session import load_splits

    folder = transferkit.export_dataset(name, work / "data" / name, per_class=args.per_class, seed=0)
    started = time.perf_counter()
    result = transferkit.fit(
        str(folder),
        recipe=args.recipe,
        image_size=args.image_size,
        seed=args.seed,
        out=work / "runs",
        name=f"{name}-{Path(args.recipe).stem}-seed{args.seed}",
        verbose=args.verbose,
    )
    seconds = time.perf_counter() - started
    splits = load_splits(str(folder), result.recipe)  # the same seed: the split fit used
    features = split_features(result, splits)
    state = json.loads((result.run_dir / "state.json").read_text())
    check = state.get("augmentation")
    augmentation = "not measured" if check is None else ("kept" if check["use_augmentation"] else "dropped")
    return Row(
        dataset=name,
        recipe=Path(args.recipe).stem,
        seed=args.seed,
        cut=result.recipe.backbone.cut,
        feature_dim=int(features["train"][0].shape[1]),
        train_images=len(features["train"][1]),
        val_images=len(features["val"][1]),
        test_images=len(features["test"][1]),
        head_val=float(result.validation_metrics.accuracy),
        head_test=float(result.metrics.accuracy),
        head_epochs=int(sum(state["phase_epochs"])),
        augmentation=augmentation,
        fit_seconds=round(seconds, 1),
        resplits=resplit_heads(features, result.recipe, range(1, args.resplits + 1), args.rates)
        if args.resplits
        else None,
        **compare_on_features(features),
    )


def print_table(rows: list[Row]) -> None:
    print(
        f"\n{'data set':<18}{'recipe':<27}{'cut':<14}{'dim':>5}{'n tr/va/te':>13}{'probe cv':>9}"
        f"{'logreg va/te':>14}{'best C va/te':>19}{'head va/te':>13}{'aug':>9}{'fit s':>7}"
    )
    for r in rows:
        print(
            f"{r.dataset:<18}{r.recipe:<27}{r.cut:<14}{r.feature_dim:>5}"
            f"{f'{r.train_images}/{r.val_images}/{r.test_images}':>13}{r.probe_cv:>9.3f}"
            f"{r.logreg_val:>7.3f}/{r.logreg_test:.3f}"
            f"{f'(C={r.logreg_best_c:g})':>10}{r.logreg_best_c_val:.3f}/{r.logreg_best_c_test:.3f}"
            f"{r.head_val:>7.3f}/{r.head_test:.3f}{r.augmentation:>9}{r.fit_seconds:>7.0f}"
        )
    for r in rows:
        for variant, (val, test) in (r.resplits or {}).items():
            print(f"  {r.dataset:<18}{variant:<16} mean over the re-splits: val {val:.3f}  test {test:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["font_families_mpl", "icon_themes"])
    parser.add_argument("--recipe", default="small_dissimilar", help="A built-in name or a recipe file.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=150, help="Images per class exported (seeded).")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--resplits", type=int, default=0, help="Also train heads on N re-splits.")
    parser.add_argument("--rates", nargs="+", type=float, default=[1e-2, 1e-3], help="For --resplits.")
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--work", help="Folder for exported data and runs (default: a temporary one).")
    parser.add_argument("--json", help="Write the rows here.")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory(prefix="transferkit-head-vs-probe-") as scratch:
        work = Path(args.work or scratch)
        rows = []
        for name in args.datasets:
            rows.append(run_one(name, args, work))
            print_table(rows[-1:])
            sys.stdout.flush()
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(row) for row in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
