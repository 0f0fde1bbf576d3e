"""``transferkit demo``: real transfer learning on real images, offline, in a few minutes.

It writes two of the built-in example datasets as ordinary image folders, runs
``transferkit fit`` on each exactly as a user would on ``./pets`` (in a subprocess, through the
CLI, with the selector choosing the recipe), runs the same recipe again with random weights
as the control, and prints a summary: dataset, recipe, weights, accuracy, time, run folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from transferkit import recipes
from transferkit.data.examples import export_dataset
from transferkit.errors import TransferkitError

DEMO_DATASETS = {"lfw_faces": None, "animal_mnist": 100}  # name -> images per class (None = all)
# The photos are 25-28 px: 128 px input keeps every detail they have at a third of 224 px's cost.
DEMO_FLAGS = ["--image-size", "128"]


@dataclass(frozen=True)
class DemoRow:
    dataset: str
    weights: str
    recipe: str
    accuracy: float  # on the held-out test split ("validation" split only when none could be held out)
    split: str
    seconds: float
    run_dir: Path


def _fit(data: Path, out: Path, name: str, extra: list[str]) -> DemoRow:
    shutil.rmtree(out / name, ignore_errors=True)  # a re-run replaces the previous demo run
    command = [
        sys.executable,
        "-m",
        "transferkit.cli",
        "fit",
        "--data",
        str(data),
        "--out",
        str(out),
        "--name",
        name,
        *extra,
    ]
    print("\n$ transferkit " + " ".join(command[3:]), flush=True)
    started = time.perf_counter()
    code = subprocess.run(command).returncode
    if code != 0:
        raise TransferkitError(
            f"`transferkit fit` on {data} failed (exit {code}); its error is printed above."
        )
    seconds = time.perf_counter() - started
    run_dir = out / name
    record = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    split = record.get("headline", "validation")
    recipe = recipes.load(run_dir / "recipe.toml").name
    weights = "random" if "random" in extra else "imagenet"
    return DemoRow(data.name, weights, recipe, record[split]["accuracy"], split, seconds, run_dir)


def run_demo(
    data_dir: str | Path = "demo_data", out: str | Path = "runs/demo", controls: bool = True
) -> list[DemoRow]:
    """Export the demo datasets, fit each with pretrained weights (and random ones as a control).

    Args:
        data_dir: where the example image folders are written (reused if already complete).
        out: parent folder of the run folders (previous demo runs there are replaced).
        controls: also train the chosen recipe from random weights.
    """
    data_dir, out = Path(data_dir), Path(out)
    rows = []
    for name, per_class in DEMO_DATASETS.items():
        folder = export_dataset(name, data_dir / name, per_class=per_class)
        pretrained = _fit(folder, out, f"{name}-pretrained", DEMO_FLAGS)
        rows.append(pretrained)
        if controls:
            rows.append(
                _fit(
                    folder,
                    out,
                    f"{name}-random",
                    [
                        "--recipe",
                        pretrained.run_dir.joinpath("recipe.toml").as_posix(),
                        "--weights",
                        "random",
                    ],
                )
            )
    return rows


def summary(rows: list[DemoRow]) -> str:
    """The closing table."""
    lines = [f"{'dataset':<14}{'weights':<10}{'recipe':<18}{'accuracy':>9} {'on':<11}{'time':>6}  run folder"]
    for row in rows:
        split = "test" if row.split == "test" else "validation"
        lines.append(
            f"{row.dataset:<14}{row.weights:<10}{row.recipe:<18}{row.accuracy:>9.3f} {split:<11}"
            f"{row.seconds:>5.0f}s  {row.run_dir}"
        )
    return "\n".join(lines)
