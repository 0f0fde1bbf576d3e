"""benchmarks/regret.py's work folder: a temporary one is deleted when the run ends (each compare's
exports and run folders take hundreds of MB), even when a data set fails; ``--work`` keeps it
(run_one stubbed: no compares)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import regret  # noqa: E402


def _row(name: str, seed: int) -> regret.Row:
    return regret.Row(
        dataset=name,
        suite="held-out",
        seed=seed,
        test_images=10,
        picked="small_similar",
        measured_pick="small_similar",
        best="small_similar",
        accuracies={"small_similar": 0.9},
        regret_points=0.0,
        regret_halfwidth=5.0,
        close_call=False,
        confidence=0.9,
        selection_seconds=1.0,
        reused_seconds=0.4,
        picked_fit_seconds=10.0,
        compare_seconds=30.0,
    )


def _stub(monkeypatch, works: list[Path]):
    def run_one(name, seed, args, work):
        works.append(work)
        (work / "runs" / name).mkdir(parents=True, exist_ok=True)
        if name == "broken":
            raise RuntimeError("a data set that fails")
        return _row(name, seed)

    monkeypatch.setattr(regret, "run_one", run_one)


def test_a_temporary_work_folder_is_deleted_and_a_given_one_kept(monkeypatch, tmp_path, capsys):
    works: list[Path] = []
    _stub(monkeypatch, works)
    monkeypatch.setattr(regret.tempfile, "tempdir", str(tmp_path))  # mkdtemp makes it under tmp_path

    assert regret.main(["--datasets", "digits", "broken", "--seeds", "0"]) == 0

    assert len(works) == 2 and works[0] == works[1] and works[0].parent == tmp_path
    assert not works[0].exists()
    out = capsys.readouterr()
    assert "digits" in out.out and "failed: RuntimeError" in out.err and "work folder kept" not in out.out
    assert "selection cost median 10.0%" in out.out and "reuses, median 6.0%" in out.out

    kept = tmp_path / "kept"
    assert regret.main(["--datasets", "digits", "--seeds", "0", "--work", str(kept)]) == 0
    assert (kept / "runs" / "digits").is_dir()
    assert f"work folder kept: {kept}" in capsys.readouterr().out
