"""analyze / compare: the selector on its own, then checked against training every recipe on one split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import transferkit
from transferkit.cli import main
from transferkit.data.loading import load_data
from transferkit.errors import TransferkitError
from transferkit.reporting.comparison import ComparisonResult
from transferkit.selection.analyze import load_selection
from transferkit.selection.quadrants import QUADRANTS
from transferkit.testing import make_image_folder

TINY = {"backbone": "tiny", "weights": "random", "image_size": 16}
TINY_FLAGS = ["--backbone", "tiny", "--weights", "random", "--image-size", "16"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return str(
        make_image_folder(tmp_path_factory.mktemp("data") / "shapes", classes=3, per_class=10, size=16)
    )


def _invoke_recording(module, name: str, args: list[str]):
    """Run the CLI with ``args``; returns its result and what ``module.name`` (the API function the
    command calls, run for real) returned to it."""
    made, real = [], getattr(module, name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, name, lambda *a, **k: made.append(real(*a, **k)) or made[-1])
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (returned,) = made
    return result, returned


@pytest.fixture(scope="module")
def analyzed(folder, tmp_path_factory):
    """One ``transferkit analyze``, shared by the tests of what it prints and what it writes; its data
    a path from the home folder, as typed."""
    from transferkit.selection import analyze

    out = tmp_path_factory.mktemp("analyze")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(Path(folder).parent))
        args = ["analyze", "--data", f"~/{Path(folder).name}", *TINY_FLAGS, "--out", str(out)]
        printed, result = _invoke_recording(analyze, "analyze", args)
    return printed, result, out


@pytest.fixture(scope="module")
def compare_cli(folder, tmp_path_factory):
    """One ``transferkit compare`` of every recipe (a fit each), shared by the tests of what it
    prints and of the ComparisonResult it made."""
    from transferkit.selection import compare

    out = tmp_path_factory.mktemp("compare")
    args = ["compare", "--data", folder, *TINY_FLAGS, "--recipes", ",".join(QUADRANTS), "--epochs", "1",
            "--batch-size", "8", "--out", str(out), "--name", "cmp", "--quiet"]  # fmt: skip
    return _invoke_recording(compare, "compare", args)


@pytest.fixture(scope="module")
def compared(compare_cli) -> ComparisonResult:
    return compare_cli[1]


def test_analyze_writes_the_evidence_and_the_json_round_trips(analyzed, folder):
    _, result, out = analyzed
    assert result.card.source == str(Path(folder).resolve())  # recorded absolute, ~ expanded
    command = result.compare_command()  # the compare it suggests builds the same base
    assert f"--data {result.card.source}" in command and "--weights random" in command

    assert result.run_dir.parent == out and result.run_dir.name.startswith("analyze-shapes-")
    for name in ("dataset_card.json", "selection.json", "selection.png"):
        assert (result.run_dir / name).stat().st_size > 0
    assert (result.run_dir / "selection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_selection(result.run_dir / "selection.json") == result.selection
    card = json.loads((result.run_dir / "dataset_card.json").read_text())
    assert card == json.loads(json.dumps(result.card.to_dict()))
    assert result.selection.quadrant in QUADRANTS
    assert [s.cut for s in result.selection.scores] == ["block1_pool", "block2_pool", "block3_pool"]
    assert 0 < result.selection_seconds <= result.seconds
    import dataclasses  # a pick that fit averages with a second network says so where it is named

    averaged = dataclasses.replace(
        result, selection=dataclasses.replace(result.selection, partner="small_similar")
    )
    (chosen,) = (line for line in averaged.summary().splitlines() if line.startswith("Chosen:"))
    assert "averaged with small_similar (confidence" in chosen


def test_compare_trains_every_recipe_on_the_same_split(compared, folder):
    runs = [Path(run.run_dir) for run in compared.runs]
    assert [run.recipe for run in compared.runs] == list(QUADRANTS)
    assert all(run.parent == compared.run_dir for run in runs)
    card = (compared.run_dir / "dataset_card.json").read_text()
    assert all((run / "dataset_card.json").read_text() == card for run in runs)
    assert len({(run / "labels.txt").read_text() for run in runs}) == 1
    assert {json.loads((run / "run.json").read_text())["seed"] for run in runs} == {1337}
    supports = {json.loads((run / "metrics.json").read_text())["validation"]["num_samples"] for run in runs}
    assert supports == {compared.analysis.split["num_val"]}
    # every recipe is tested on the same held-out images, ones the selector's split also left out
    tested = {json.loads((run / "run.json").read_text())["test_split"]["sha256"] for run in runs}
    assert tested == {compared.analysis.split["test_sha256"]} and compared.analysis.split["num_test"] == 6
    assert {json.loads((run / "metrics.json").read_text())["headline"] for run in runs} == {"test"}
    # fit's split is seeded: the same seed gives the same validation files, another seed does not
    first, again = (load_data(folder, validation_split=0.2, seed=1337) for _ in range(2))
    assert first.val.paths == again.val.paths and len(first.val.paths) == 6
    assert load_data(folder, validation_split=0.2, seed=7).val.paths != first.val.paths


def test_compare_trains_a_network_that_two_recipes_share_once(compared):
    rows = {run.recipe: run for run in compared.runs}
    shared, again = rows["large_similar"], rows["large_dissimilar"]  # one whole-network schedule
    assert again.same_as == "large_similar" and not shared.same_as and not rows["small_similar"].same_as
    assert again.run_dir == shared.run_dir and not (compared.run_dir / "large_dissimilar").exists()
    assert (again.accuracy, again.validation_accuracy) == (shared.accuracy, shared.validation_accuracy)
    assert (again.strategy, shared.strategy) == ("retrain", "fine_tune")
    assert "large_dissimilar trains exactly as large_similar: one fit" in compared.table()
    data = json.loads((compared.run_dir / "comparison.json").read_text())
    assert [run["same_as"] for run in data["runs"]] == ["", "", "", "large_similar"]


def test_compare_writes_table_and_plot_and_regret_matches_the_json(compared):
    data = json.loads((compared.run_dir / "comparison.json").read_text())
    accuracies = {run["recipe"]: run["accuracy"] for run in data["runs"]}
    picked = [run["recipe"] for run in data["runs"] if run["picked"]]

    assert picked == [data["picked"]] == [compared.analysis.selection.quadrant]
    assert data["regret_points"] == pytest.approx(
        100 * (max(accuracies.values()) - accuracies[data["picked"]])
    )
    assert data["regret_points"] >= 0 and 0 < data["selection_fraction"] < 1
    assert data["accuracy_split"] == "test" and {run["split"] for run in data["runs"]} == {"test"}
    for run in data["runs"]:
        test = json.loads((Path(run["run_dir"]) / "metrics.json").read_text())
        assert run["accuracy"] == test["test"]["accuracy"]
        assert run["validation_accuracy"] == test["validation"]["accuracy"]
        assert run["accuracy_low"] <= run["accuracy"] <= run["accuracy_high"]
    assert all(run["trainable_params"] > 0 and run["peak_rss_mb"] > 0 for run in data["runs"])
    with open(compared.run_dir / "comparison.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["recipe"] for row in rows] == list(QUADRANTS)
    assert {"split", "accuracy_low", "accuracy_high", "validation_accuracy"} <= set(rows[0])
    assert (compared.run_dir / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    table = compared.table()
    assert f"{data['picked']} *" in table and "Regret of the pick" in table
    assert table.splitlines()[0].split()[2:5] == ["test", "acc", "95%"] and "held-out test accuracy" in table
    import dataclasses  # without a test split every figure is validation: one column of it, said so

    runs = [dataclasses.replace(run, split="validation") for run in compared.runs]
    untested = dataclasses.replace(compared, runs=runs).table()
    assert untested.splitlines()[0].count("val acc") == 1
    assert "percentage points of validation accuracy (no test split could be held out) (+/- " in untested
    # The regret carries its interval; an averaged pick names its run folder (or says it has none).
    from transferkit.reporting.metrics import difference_halfwidth

    best, pick = max(accuracies.values()), accuracies[data["picked"]]
    assert data["scored_images"] == data["split"]["num_test"] > 0
    assert data["regret_halfwidth"] == pytest.approx(difference_halfwidth(best, pick, data["scored_images"]))
    assert f"at 95% on {data['scored_images']} images" in table
    averaged = [dataclasses.replace(run, recipe="averaged") if run.picked else run for run in compared.runs]
    folder = next(run.run_dir for run in averaged if run.picked)
    assert (
        f"The averaged pick's run folder (the model fit would give): {folder}"
        in dataclasses.replace(compared, runs=tuple(averaged)).table()
    )
    averaging = dataclasses.replace(compared.analysis.selection, partner="small_dissimilar", partner_cut="b3")
    untrained = dataclasses.replace(
        compared,
        analysis=dataclasses.replace(compared.analysis, selection=averaging),
        runs=tuple(dataclasses.replace(run, picked=False) for run in compared.runs),
    )
    assert untrained.regret_points is None and "Regret: not measured. The pick averages " in untrained.table()
    assert "small_dissimilar (cut at 'b3')" in untrained.table()
    unjoined = [dataclasses.replace(run, run_dir="a + b") if run.picked else run for run in averaged]
    assert "no run folder of its own" in dataclasses.replace(compared, runs=tuple(unjoined)).table()


def test_compare_checks_its_arguments_before_any_work(folder, tmp_path):
    with pytest.raises(TransferkitError, match="nope.*small_similar"):
        transferkit.compare(folder, **TINY, recipes=("small_similar", "nope"), out=tmp_path, verbose=0)
    assert list(tmp_path.iterdir()) == []


def test_cli_analyze_prints_the_cut_table_and_the_decision(analyzed):
    result, _, _ = analyzed  # its exit code checked there
    for text in ("probe accuracy", "block3_pool", "Chosen:", "confidence", "selection.json"):
        assert text in result.stdout


def test_cli_compare_prints_the_side_by_side_table(compare_cli):
    result, _ = compare_cli  # its exit code checked there
    assert "recipe" in result.stdout and "accuracy" in result.stdout and "comparison.json" in result.stdout
    assert " *" in result.stdout and "Selection took" in result.stdout


def test_cli_missing_data_folder_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["analyze", "--data", str(tmp_path / "missing"), *TINY_FLAGS])

    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("Error:")
