"""benchmarks/peer_fastai.py's rounds: each pair runs ``--rounds`` times, the tools' order alternating,
and the report gives the median times and each round's own ratio (the two tools stubbed: no fits)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peer_fastai  # noqa: E402


def _result(tool: str, seconds: float, accuracy: float, rss_mb: float = 2048.0) -> dict:
    return {
        "tool": tool,
        "returncode": 0,
        "process_seconds": seconds,
        "cpu_seconds": 2 * seconds,
        "peak_rss_mb": rss_mb,
        "test_accuracy": accuracy,
        "log": "-",
    }


def test_rounds_summarise_to_median_times_and_the_median_of_each_rounds_ratio():
    rounds = [
        {"fastai": _result("fastai", 300.0, 0.7, 4096.0), "transferkit": _result("transferkit", 200.0, 0.8)},
        {"fastai": _result("fastai", 450.0, 0.7, 4000.0), "transferkit": _result("transferkit", 220.0, 0.8)},
        {"fastai": _result("fastai", 330.0, 0.72, 4096.0), "transferkit": _result("transferkit", 210.0, 0.8)},
    ]
    for outcome in rounds:
        outcome.update(peer_fastai._ratios(outcome["fastai"], outcome["transferkit"]))
    summary = peer_fastai.summarize_rounds(rounds)
    assert summary["fastai"]["process_seconds"] == 330.0  # the median, not the first or the mean
    assert summary["fastai"]["process_seconds_rounds"] == [300.0, 450.0, 330.0]
    assert summary["transferkit"]["cpu_seconds"] == 420.0
    assert summary["time_ratio_rounds"] == pytest.approx([1.5, 450 / 220, 330 / 210])
    assert summary["time_ratio_fastai_over_transferkit"] == pytest.approx(330 / 210)
    assert summary["rss_ratio_fastai_over_transferkit"] == pytest.approx(2.0)  # the first round's peaks
    assert summary["fastai"]["test_accuracy_rounds"] == [0.7, 0.7, 0.72]  # they differ: all are kept
    assert "test_accuracy_rounds" not in summary["transferkit"]  # the same every round
    assert "1.57x (1.50, 2.05, 1.57)" in peer_fastai._round_ratios(summary)


def test_one_round_is_the_pair_as_it_ran():
    outcome = {"fastai": _result("fastai", 300.0, 0.7), "transferkit": _result("transferkit", 150.0, 0.8)}
    outcome.update(peer_fastai._ratios(outcome["fastai"], outcome["transferkit"]))
    summary = peer_fastai.summarize_rounds([outcome])
    assert summary["time_ratio_fastai_over_transferkit"] == 2.0
    assert peer_fastai._round_ratios(summary) == "2.00x"
    one_side = peer_fastai.summarize_rounds([{"fastai": _result("fastai", 300.0, 0.7)}])
    assert "time_ratio_rounds" not in one_side and "transferkit" not in one_side


def test_main_alternates_the_tools_order_over_rounds_and_data_sets(tmp_path, monkeypatch, capsys):
    folders = []
    for name in ("a", "b"):
        for split in peer_fastai.SPLITS:
            (tmp_path / name / split / "cat").mkdir(parents=True)
            (tmp_path / name / split / "cat" / "1.png").write_bytes(b"")
        folders.append(("set_" + name, 0, tmp_path / name))
    order = []
    seconds = iter(range(100, 1000, 10))

    def side(tool):
        def run(args, folder, seed, *rest):
            order.append((folder.name, tool, rest[-1]))
            return _result(tool, float(next(seconds)), 0.5)

        return run

    monkeypatch.setattr(peer_fastai, "find_transferkit", lambda explicit: "transferkit")
    monkeypatch.setattr(peer_fastai, "check_peer_env", lambda python: "fastai stub")
    monkeypatch.setattr(peer_fastai, "find_weights", lambda explicit, transferkit: tmp_path / "weights.pth")
    monkeypatch.setattr(peer_fastai, "prepare", lambda args, transferkit, work: folders)
    monkeypatch.setattr(peer_fastai, "run_fastai", side("fastai"))
    monkeypatch.setattr(peer_fastai, "run_transferkit", side("transferkit"))
    monkeypatch.setattr(peer_fastai.subprocess, "run", lambda *a, **k: type("Done", (), {"stdout": "0.1"})())
    out = tmp_path / "peer.json"
    status = peer_fastai.main(["--rounds", "2", "--work", str(tmp_path / "work"), "--json", str(out)])
    assert status == 0
    assert [(folder, tool) for folder, tool, _ in order] == [
        ("a", "transferkit"), ("a", "fastai"), ("a", "fastai"), ("a", "transferkit"),
        ("b", "fastai"), ("b", "transferkit"), ("b", "transferkit"), ("b", "fastai"),
    ]  # fmt: skip
    assert {tag for _, _, tag in order} == {"set_a-seed0-round1", "set_a-seed0-round2", "set_b-seed0-round1",
                                            "set_b-seed0-round2"}  # fmt: skip
    payload = json.loads(out.read_text())
    assert payload["settings"]["rounds"] == 2
    first = payload["results"][0]
    assert len(first["rounds"]) == 2 and first["rounds"][1]["order"] == ["fastai", "transferkit"]
    # a: transferkit 100 s, fastai 110 s; then fastai 120 s, transferkit 130 s
    assert first["time_ratio_rounds"] == pytest.approx([1.1, 120 / 130])
    assert first["transferkit"]["process_seconds"] == 115.0
    assert "round 2/2" in capsys.readouterr().out


def test_rounds_must_be_at_least_one():
    with pytest.raises(SystemExit):
        peer_fastai.parse_args(["--rounds", "0"])
