"""Python's cyclic garbage collector kept off the objects TensorFlow and Keras make to last.

Two costs, measured on a 2-core CPU (Python 3.11, TensorFlow 2.21): importing TensorFlow and Keras
makes about 700,000 objects, and the collector's full passes over the growing heap took a quarter
of the import (2.9-3.0 s with it running, 2.2 s paused); and a fit's own allocations (Keras
layers, traced graphs) set off full passes that walk every object the imports made: 0.2-0.5 s of a
5.5-s fit (240 images at 128 px) through the API, 0.6-0.8 s in the command line's process. Neither
kind of pass finds garbage worth its walk: those objects live as long as the process does.

- :func:`collector_paused`: the collector off for a block (TensorFlow's import:
  :func:`transferkit.runtime.tf_logging.import_quietly`).
- :func:`older_objects_frozen` / :func:`spares_older_objects`: what existed before a fit is left
  out of the passes while it runs (``gc.freeze``), and put back afterwards (``gc.unfreeze``).

The command line freezes what its imports made for the whole process (:mod:`transferkit.cli`).
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator
from typing import TypeVar

F = TypeVar("F", bound=Callable)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off for a block, its state restored afterwards (off stays off). The cycles
    the block leaves are collected by the next pass after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def older_objects_frozen() -> Iterator[None]:
    """The objects that exist when the block starts are left out of the collector's passes until it
    ends; what the block makes is collected as usual. Where objects are frozen already (the command
    line's process, or the caller's own ``gc.freeze``), nothing changes."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def spares_older_objects(function: F) -> F:
    """``function`` run inside :func:`older_objects_frozen`."""

    @functools.wraps(function)
    def spared(*args, **kwargs):
        with older_objects_frozen():
            return function(*args, **kwargs)

    return spared  # type: ignore[return-value]
