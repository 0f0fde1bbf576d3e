"""Every docstring example in transferkit runs and shows what it says (``+SKIP`` marks the ones
that need a user's data, real weights or a trained run)."""

import doctest
import importlib
import pkgutil

import pytest

import transferkit

MODULES = sorted(info.name for info in pkgutil.walk_packages(transferkit.__path__, "transferkit."))


def test_the_walk_finds_the_subpackages():
    assert {"transferkit.api", "transferkit.prediction", "transferkit.training.progress"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write a file write it here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see stdout)"
