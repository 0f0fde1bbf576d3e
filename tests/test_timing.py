"""The stopwatch of a run's stages, and the ``timings.json`` a fit leaves in its run folder."""

import json

import pytest

import transferkit
from transferkit.console import run_time
from transferkit.testing import make_image_folder
from transferkit.training.timing import TIMINGS_FILE, StageTime, Stopwatch


def test_stages_are_recorded_in_order_with_nested_ones_named_after_their_outer_stage():
    stopwatch = Stopwatch()
    with stopwatch.stage("build base"):
        pass
    with stopwatch.stage("phase 1"):
        with stopwatch.stage("features"):
            pass
        with stopwatch.stage("training"):
            pass
    names = [(s.name, s.depth) for s in stopwatch.stages]
    assert names == [("build base", 0), ("phase 1 / features", 1), ("phase 1 / training", 1), ("phase 1", 0)]
    assert list(stopwatch.totals()) == ["build base", "phase 1", "other"]


def test_a_stage_records_the_cpu_time_the_process_spent_in_it():
    stopwatch = Stopwatch()
    with stopwatch.stage("busy"):
        sum(i * i for i in range(300_000))
    with stopwatch.stage("asleep"):
        pass
    busy, asleep = stopwatch.stages
    assert busy.cpu_seconds > 0 and asleep.cpu_seconds < busy.cpu_seconds
    assert "cpu_seconds" in stopwatch.to_dict()["stages"][0]


def test_a_stage_that_raises_is_still_recorded():
    stopwatch = Stopwatch()
    with pytest.raises(RuntimeError), stopwatch.stage("save model"):
        raise RuntimeError("disk full")
    assert [s.name for s in stopwatch.stages] == ["save model"]


def test_totals_sum_repeated_stages_and_count_nested_time_once():
    stopwatch = Stopwatch()
    for _ in range(2):
        with stopwatch.stage("phase 1"), stopwatch.stage("features"):
            pass
    totals = stopwatch.totals()
    outer = [s.seconds for s in stopwatch.stages if s.depth == 0]
    assert totals["phase 1"] == pytest.approx(sum(outer))
    assert sum(totals.values()) == pytest.approx(stopwatch.elapsed(), abs=0.01)  # "other" fills the rest


def test_summary_is_one_line_with_inner_stages_in_brackets():
    stopwatch = Stopwatch()
    stopwatch.stages += [  # a finished record, as if timed
        StageTime("build base", 1.25),
        StageTime("phase 1 / features", 3.0, 1),
        StageTime("phase 1 / training", 2.0, 1),
        StageTime("phase 1", 5.5),
        StageTime("plots", 0.01),
    ]
    line = stopwatch.summary()
    assert "\n" not in line and line.startswith(
        "Time: build base 1.2 s, phase 1 5.5 s (features 3.0, training 2.0)"
    )
    assert "plots" not in line  # under the smallest shown; still in the file
    assert "plots" in stopwatch.to_dict()["totals"]


def test_reused_seconds_are_recorded_per_stage_and_shown_in_the_summary():
    stopwatch = Stopwatch()
    stopwatch.stages.append(StageTime("selection", 4.5))
    assert "reused" not in stopwatch.to_dict()  # nothing reused, nothing written
    stopwatch.reuse("selection", 1.5)
    stopwatch.reuse("selection", 0.6)
    stopwatch.reuse("trials", 0.0)  # nothing of theirs reused: not written
    assert stopwatch.to_dict()["reused"] == {"selection": 2.1}
    assert "selection 4.5 s (2.1 of it reused)" in stopwatch.summary()


def test_fit_writes_timings_of_every_stage_and_prints_one_line(tmp_path, capsys):
    data = make_image_folder(tmp_path / "shapes", classes=2, per_class=8)
    run = transferkit.fit(
        str(data), recipe="small_similar", backbone="tiny", weights="random", image_size=16,
        epochs=2, batch_size=8, out=tmp_path / "runs", verbose=2,
    )  # fmt: skip
    record = json.loads((run.run_dir / TIMINGS_FILE).read_text())
    names = [s["name"] for s in record["stages"]]
    for stage in ("load data", "build base", "build classifier", "phase 1 / features", "phase 1 / training",
                  "test evaluation", "validation evaluation", "save model", "plots", "interpretation",
                  "report"):  # fmt: skip
        assert stage in names, (stage, names)
    assert sum(record["totals"].values()) == pytest.approx(record["seconds"], abs=0.05)
    printed = capsys.readouterr().out.splitlines()
    timed = [line for line in printed if line.startswith("Time: ")]  # stages under 0.05 s are left out
    assert len(timed) == 1 and timed[0].endswith(" s)"), timed


def test_a_resumed_runs_time_says_what_came_before_the_stop_where_it_is_known():
    assert run_time(52.4) == "52 s"
    assert run_time(52.4, resumed=True, before=30.2) == "52 s (30 before the stop, 22 since the resume)"
    assert run_time(22.0, resumed=True) == "22 s since the resume"  # stopped before any saved progress
    assert run_time(1234.0) == "1,234 s"
