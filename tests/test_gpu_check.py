"""benchmarks/gpu_check.py in its no-GPU path: it says so plainly and exits 0.

Run in the test's own process (TensorFlow is loaded already; a child would spend ~20 s of CPU
loading it again), with TensorFlow's GPU list emptied, so the no-GPU path runs on any machine.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import tensorflow as tf

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_no_gpu_was_found_and_exits_0(tmp_path, monkeypatch, capsys):
    gpu_check = _load_script()
    listed = tf.config.list_physical_devices
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: [] if kind == "GPU" else listed(kind)
    )
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "No GPU found" in printed and "Nothing was measured" in printed
    record = json.loads(out.read_text())
    assert record["gpus"] == 0 and "mixed_precision" not in record
