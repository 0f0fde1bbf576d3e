"""The selector's regret on real data it was (or was not) tuned on: ``compare`` over a suite of
offline example datasets, several seeded splits each.

For every data set and seed it exports the images as a folder, runs :func:`transferkit.compare`
(the selector, then all four quadrant recipes trained on one split and seed), and records the
pick, the best recipe, each recipe's accuracy on the held-out TEST split, and what selecting cost:
``sel/fit``, the seconds of fit's selection and trials stages over the picked recipe's own fit (given
that recipe, as ``compare`` trains it), and ``added``, the same less the passes over the training and
validation images that fit's training takes from the selection instead of running them itself
(``timings.json``'s ``"reused"``).
The pick is the recipe ``fit`` itself trains: when the selector calls its decision close, ``fit``
(default ``selection="trial"``) settles it by trials on the training and validation splits, so
the harness runs those trials too; the selector's measured pick is kept beside it.

The suite is split in two and the split is fixed here, before any result is seen:

- ``tuning``: the data sets the selector's thresholds may be set on (the four original built-ins,
  which the constants in ``transferkit/selection/rules.py`` were set on, plus three new ones);
- ``held-out``: data sets kept out of every threshold decision. Only their figures go into the
  README's regret table.

Usage (outside the test suite; ``make benchmark-regret`` installs the Debian data packages first):

    python benchmarks/regret.py --suite held-out --seeds 0 1 --image-size 96
    python benchmarks/regret.py --datasets textures lfw_faces --seeds 0 --quick

The regret interval is Agresti and Caffo's for the difference of two independent accuracies on n
test images (``transferkit.reporting.metrics.difference_halfwidth``; conservative: both recipes are
scored on the same images). Tables before 2026-12-07 used the plain normal approximation, within
half a point of it at these sizes away from 0 and 100%.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TUNING = (
    "lfw_faces", "animal_mnist", "digits", "textures", "font_families_mpl", "icon_themes", "science_tiles",
    "chess_pieces",
)  # fmt: skip
# chess_pieces joined the tuning sets on 2026-12-06, unseen until its first run: at 70 pictures per
# class, real evidence below the small floor of 50 training images per class.
# card_ranks joined on 2026-12-02, stamp_categories and clipart_categories on 2026-12-04,
# icon_contexts on 2026-12-05, mahjong_suits on 2026-12-06, each unseen until its first run.
HELD_OUT = (
    "font_families", "playing_cards", "emoji_groups", "card_ranks", "stamp_categories", "clipart_categories",
    "icon_contexts", "mahjong_suits",
)  # fmt: skip
SUITES = {"tuning": TUNING, "held-out": HELD_OUT, "all": TUNING + HELD_OUT}


@dataclass(frozen=True)
class Row:
    """One compare: a data set, a seed, the pick, the best, and the regret on the test split."""

    dataset: str
    suite: str
    seed: int
    test_images: int
    picked: str  # what fit trains: the measured pick, or the trials' winner on a close call
    measured_pick: str  # the selector's pick before any trial (compare's)
    best: str
    accuracies: dict  # recipe -> test accuracy
    regret_points: float
    regret_halfwidth: float  # 95%, in points
    close_call: bool
    confidence: float
    selection_seconds: float  # fit's selection and trials stages: the selector's pass and probes, any trials
    reused_seconds: float  # of those, the passes fit's own training reused (timings.json's "reused")
    picked_fit_seconds: float
    compare_seconds: float

    @property
    def selection_share_of_fit(self) -> float:
        """Selection's seconds over the picked recipe's fit given that recipe (no selection)."""
        return self.selection_seconds / max(self.picked_fit_seconds, 1e-9)

    @property
    def added_share_of_fit(self) -> float:
        """What selecting adds to the fit: its seconds less the passes the fit would have run itself."""
        return (self.selection_seconds - self.reused_seconds) / max(self.picked_fit_seconds, 1e-9)


def run_one(name: str, seed: int, args: argparse.Namespace, work: Path) -> Row:
    import transferkit
    from transferkit.reporting.metrics import difference_halfwidth

    folder = transferkit.export_dataset(name, work / "data" / name, per_class=args.per_class, seed=0)
    options = dict(image_size=args.image_size, seed=seed, out=work / "runs", verbose=0)
    if args.epochs:
        options["epochs"] = args.epochs
    if args.backbone:
        options.update(backbone=args.backbone, weights=args.weights)
    result = transferkit.compare(str(folder), name=f"{name}-seed{seed}", **options)
    runs = {run.recipe: run for run in result.runs}
    selection = result.analysis.selection
    overrides = {
        key: options[key] for key in ("image_size", "epochs", "backbone", "weights") if key in options
    }
    picked, stopwatch = fit_pick(folder, seed, overrides)
    totals = stopwatch.totals()
    pick, best = runs[picked], result.best
    n = _test_images(result)
    return Row(
        dataset=name,
        suite="held-out" if name in HELD_OUT else "tuning",
        seed=seed,
        test_images=n,
        picked=picked,
        measured_pick=result.picked,
        best=best.recipe,
        accuracies={recipe: round(run.accuracy, 4) for recipe, run in runs.items()},
        regret_points=100 * (best.accuracy - pick.accuracy),
        regret_halfwidth=difference_halfwidth(best.accuracy, pick.accuracy, n),
        close_call=selection.close_call,
        confidence=selection.confidence,
        selection_seconds=totals.get("selection", 0.0) + totals.get("trials", 0.0),
        reused_seconds=sum(stopwatch.reused.values()),
        picked_fit_seconds=pick.seconds,
        compare_seconds=result.seconds,
    )


def fit_pick(folder: Path, seed: int, overrides: dict):
    """The quadrant recipe ``fit(folder, seed=seed, **overrides)`` would train, and the stopwatch of
    its steps up to training (its stages, and what of them the training would reuse).

    The same steps as ``fit`` up to training: the split, the selector on the pretrained base, and
    on a close call the trials (successive halving on the training and validation splits).
    """
    from transferkit.api import resolve_recipe
    from transferkit.selection.compare import AVERAGED
    from transferkit.session import load_splits, prepare
    from transferkit.training.device import device_scope

    recipe, measure = resolve_recipe(None, "auto", None, seed=seed, **overrides)
    with device_scope("auto", recipe.seed, "none"):
        splits = load_splits(str(folder), recipe)
        session = prepare(recipe, splits, measure, "auto", None, overrides, 0, "trial")
    picked = AVERAGED if session.partner is not None else session.selection.quadrant
    return picked, session.stopwatch


def _test_images(result) -> int:
    split = result.analysis.split
    return int(split.get("num_test") or split.get("test_images") or 0)


def print_table(rows: list[Row]) -> None:
    from transferkit.selection.compare import AVERAGED  # the averaged pick's row

    recipes = ("small_similar", "small_dissimilar", "large_similar", "large_dissimilar", AVERAGED)
    head = f"{'data set':<18}{'suite':<9}{'seed':>4}{'n':>5}  " + "".join(f"{r[:13]:>14}" for r in recipes)
    print(
        "\nTest-split accuracy per recipe (* = fit's pick, after trials on a close call)\n"
        + head
        + "  regret (pts)  sel/fit  added"
    )
    for row in rows:
        cells = "".join(
            f"{(row.accuracies.get(r, math.nan)):>13.3f}{'*' if r == row.picked else ' '}" for r in recipes
        )
        print(
            f"{row.dataset:<18}{row.suite:<9}{row.seed:>4}{row.test_images:>5}  {cells}"
            f"  {row.regret_points:5.1f} ± {row.regret_halfwidth:4.1f}  {row.selection_share_of_fit:6.1%}"
            f"  {row.added_share_of_fit:6.1%}"
        )
    for suite in ("tuning", "held-out"):
        chosen = [row for row in rows if row.suite == suite]
        if not chosen:
            continue
        per_set = {}
        for row in chosen:
            per_set.setdefault(row.dataset, []).append(row.regret_points)
        means = {name: statistics.fmean(values) for name, values in per_set.items()}
        gross = [row.selection_share_of_fit for row in chosen]
        added = [row.added_share_of_fit for row in chosen]
        print(
            f"\n{suite}: mean regret {statistics.fmean(means.values()):.2f} pts over {len(means)} data sets; "
            f"worst {max(means.values()):.2f} ({max(means, key=means.get)}); "
            f"selection cost median {statistics.median(gross):.1%} of the picked recipe's fit (most "
            f"{max(gross):.1%}); less the passes the fit reuses, median {statistics.median(added):.1%} "
            f"(most {max(added):.1%})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="held-out")
    parser.add_argument("--datasets", nargs="+", help="Instead of a suite: these example datasets.")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--per-class", type=int, default=100, help="Images per class exported (seeded).")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, help="Epochs per phase, every recipe.")
    parser.add_argument("--backbone", help="Override the backbone (default: the recipes').")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--quick", action="store_true", help="Smoke run: 30 per class, 2 epochs per phase.")
    parser.add_argument(
        "--work", type=Path, help="Folder for data and runs, kept (default: a temporary one, deleted)."
    )
    parser.add_argument("--json", type=Path, help="Write the rows here.")
    args = parser.parse_args(argv)
    if args.quick:
        args.per_class, args.epochs = 30, 2
    names = args.datasets or SUITES[args.suite]
    work = args.work or Path(tempfile.mkdtemp(prefix="transferkit-regret-"))
    try:
        rows = _run_suite(names, args, work)
    finally:
        if args.work is None:  # each compare's exports and run folders: hundreds of MB
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    if args.work is not None:
        print(f"work folder kept: {work}")
    return 0 if rows else 1


def _run_suite(names: list[str], args: argparse.Namespace, work: Path) -> list[Row]:
    """Every data set and seed of the run; a data set that fails is reported and skipped."""
    rows = []
    for name in names:
        for seed in args.seeds:
            started = time.perf_counter()
            print(f"[{time.strftime('%H:%M:%S')}] {name} seed {seed} ...", flush=True)
            try:
                row = run_one(name, seed, args, work)
            except Exception as error:  # one broken data set must not lose the others' results
                print(f"  failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
                continue
            rows.append(row)
            settled = f" (trials; measured {row.measured_pick})" if row.close_call else ""
            print(
                f"  picked {row.picked}{settled}, best {row.best}, regret {row.regret_points:.1f} pts "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            if args.json:
                args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return rows


if __name__ == "__main__":
    sys.exit(main())
