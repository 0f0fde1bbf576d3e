"""TensorFlow's log noise kept out of a terminal or notebook unless asked for (``TRANSFERKIT_DEBUG=1``).

Three sources, three remedies: C++ log lines (``failed call to cuInit``, ``NodeDef mentions
attribute``) obey ``TF_CPP_MIN_LOG_LEVEL`` if it is set before TensorFlow loads; the lines TF's
C++ start-up prints before it reads that variable are muted by muting file descriptor 2 during
the import (:func:`import_quietly`, and :func:`mute_tensorflow_startup` for an import from
anywhere else: a submodule of transferkit, or the app's own); Python-side warnings (retracing
notes) are muted within a fit, the logger's level restored afterwards. This module imports no
TensorFlow itself.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TypeVar

from transferkit.runtime.collector import collector_paused

# 2 would still print C++ errors: on a machine without a GPU, "failed call to cuInit" is one
# (measured with TensorFlow 2.21). Real failures still reach the user as Python exceptions.
QUIET_CPP_LOG_LEVEL = "3"
DEBUG_VARIABLE = "TRANSFERKIT_DEBUG"

F = TypeVar("F", bound=Callable)


def debugging() -> bool:
    """True when the user asked for everything (``TRANSFERKIT_DEBUG`` set)."""
    return bool(os.environ.get(DEBUG_VARIABLE))


def import_quietly(name: str) -> ModuleType:
    """Import module ``name``, muting file descriptor 2 if this import loads TensorFlow.

    Only the import is muted; an import that fails still raises, and its traceback prints
    afterwards. Nothing is muted when TensorFlow is loaded already or when debugging. The import
    that loads TensorFlow also runs with the garbage collector paused
    (:func:`transferkit.runtime.collector.collector_paused`).
    """
    if "tensorflow" in sys.modules:
        return importlib.import_module(name)
    with stderr_muted(), collector_paused():
        return importlib.import_module(name)


class _MutedTensorFlowStartup(importlib.abc.MetaPathFinder):
    """Finds TensorFlow's package as Python would and mutes file descriptor 2 while it first runs."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: TensorFlow loads once
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and isinstance(spec.loader, importlib.abc.Loader):
            run = spec.loader.exec_module

            def exec_module(module):
                with stderr_muted(), collector_paused():
                    run(module)

            spec.loader.exec_module = exec_module
        return spec


def mute_tensorflow_startup() -> None:
    """Mute the C++ lines TensorFlow prints as it loads (``oneDNN custom operations are on``,
    ``Could not find cuda drivers``) whoever imports it first: a transferkit module imported
    directly (``from transferkit.reporting.runfolder import SavedRun``) or the app's own ``import
    tensorflow`` or ``import keras`` after ``import transferkit``. Those lines print before
    TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``; call this only where that level is the quiet one,
    so that they would have been muted anyway. Nothing is muted when debugging or once
    TensorFlow is loaded."""
    if "tensorflow" in sys.modules or debugging():
        return
    if not any(isinstance(finder, _MutedTensorFlowStartup) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MutedTensorFlowStartup())


@contextlib.contextmanager
def stderr_muted() -> Iterator[None]:
    """Mute file descriptor 2 for a block: the C++ lines TensorFlow and LiteRT print there directly
    (converter settings, "Created TensorFlow Lite XNNPACK delegate"). Errors still raise as
    Python exceptions, whose tracebacks print after the block. Nothing is muted when debugging."""
    if debugging():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tensorflow_warnings_muted(function: F) -> F:
    """Run ``function`` with TensorFlow's Python logger at ERROR, restoring its level afterwards.

    Retracing notes ("5 out of the last 5 calls ... triggered tf.function retracing") are
    warnings about TensorFlow's internals, not something a fit's caller can act on.
    """

    @functools.wraps(function)
    def quiet(*args, **kwargs):
        logger = logging.getLogger("tensorflow")  # the logger tf.get_logger() returns
        level = logger.level
        if not debugging():
            logger.setLevel(logging.ERROR)
        try:
            return function(*args, **kwargs)
        finally:
            logger.setLevel(level)

    return quiet  # type: ignore[return-value]
