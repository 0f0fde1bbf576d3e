"""oneDNN's kernels switched on at ``import transferkit`` on x86-64, never against the user's choice."""

import os
import platform
import sys

import pytest

from transferkit.runtime import onednn
from transferkit.testing import make_image_folder


@pytest.mark.parametrize("value", ["0", "1", ""])
def test_the_users_own_setting_is_left_alone(value):
    environ = {onednn.VARIABLE: value}
    assert onednn.enable_onednn(environ, machine="x86_64") is False
    assert environ == {onednn.VARIABLE: value}


def test_it_is_switched_on_for_x86_64_before_tensorflow_loads(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    for machine in ("x86_64", "AMD64"):
        environ = {}
        assert onednn.enable_onednn(environ, machine=machine) is True
        assert environ == {onednn.VARIABLE: "1"}


def test_other_architectures_keep_their_own_kernels(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    environ = {}
    assert onednn.enable_onednn(environ, machine="aarch64") is False
    assert environ == {}


def test_nothing_is_set_once_tensorflow_is_loaded_and_fit_says_so(monkeypatch, tmp_path, capsys):
    from tensorflow.python.util import _pywrap_util_port  # noqa: PLC0415  (no public API)

    tensorflow = sys.modules["tensorflow"]
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    environ = {}
    assert onednn.enable_onednn(environ, machine="x86_64") is False
    assert environ == {}
    monkeypatch.setitem(sys.modules, "tensorflow", tensorflow)
    monkeypatch.delenv(onednn.VARIABLE)  # as TensorFlow imported first leaves it
    assert onednn.late_import_note() is None  # the kernels are on here all the same
    monkeypatch.setattr(_pywrap_util_port, "IsMklEnabled", lambda: False)
    note = onednn.late_import_note()
    assert "imported before transferkit" in note and "TF_ENABLE_ONEDNN_OPTS=1" in note

    from transferkit import api  # noqa: PLC0415

    data = make_image_folder(tmp_path / "D", classes=2, per_class=6, size=16)
    api.fit(str(data), recipe="small_similar", backbone="tiny", weights="random", dry_run=True, verbose=1)
    assert note in capsys.readouterr().out
    monkeypatch.setenv(onednn.VARIABLE, "1")  # set in time
    api.fit(str(data), recipe="small_similar", backbone="tiny", weights="random", dry_run=True, verbose=1)
    assert "oneDNN" not in capsys.readouterr().out


def test_tensorflow_runs_with_the_kernels_in_this_process():
    """The suite imports transferkit before TensorFlow (conftest), as the CLI does: the setting took."""
    from tensorflow.python.util import _pywrap_util_port  # noqa: PLC0415  (no public API)

    if platform.machine().lower() not in onednn.X86_64 or os.environ.get(onednn.VARIABLE) != "1":
        pytest.fail(f"the suite runs on x86-64 with {onednn.VARIABLE}=1 set at import (CI, the dev VMs)")
    assert _pywrap_util_port.IsMklEnabled()
