"""TensorFlow's oneDNN kernels on every x86-64 CPU, not only those with AVX-512.

TensorFlow 2.21 routes convolutions and their gradients through oneDNN's JIT kernels only on CPUs
with AVX-512 (or newer) unless ``TF_ENABLE_ONEDNN_OPTS=1``; on an AVX2 CPU it falls back to Eigen's
im2col and matrix products. Measured on a 2-core AVX2 VM (AMD EPYC, MobileNetV2, 224 px, batch 32,
``benchmarks/fine_tune_step.py``'s transferkit side, medians of two epochs after tracing, runs
interleaved): a ``large_dissimilar`` train step 1.04 s -> 0.73 s, a ``large_similar`` step 0.73-0.80 s
-> 0.54-0.61 s; a whole ``fit`` on 424 playing cards 300 s -> 219 s; the small frozen-base fit
(240 images, 128 px) 3-5% shorter, its feature passes about 10%.

:func:`enable_onednn` sets the variable at ``import transferkit``: TensorFlow reads it once, when
it is imported, so it has no effect where TensorFlow was imported first (import transferkit
first, or set the variable yourself). Left alone where the user set it (``0`` turns the kernels
off) and on other architectures (ARM builds choose their own kernels).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import MutableMapping

VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
X86_64 = ("x86_64", "amd64")


def enable_onednn(environ: MutableMapping[str, str] = os.environ, machine: str | None = None) -> bool:
    """Set ``TF_ENABLE_ONEDNN_OPTS=1`` unless it is set, TensorFlow is loaded, or the CPU is not
    x86-64; True when set.

    Example:
        >>> enable_onednn({"TF_ENABLE_ONEDNN_OPTS": "0"})
        False
    """
    if VARIABLE in environ or "tensorflow" in sys.modules:
        return False
    if (machine or platform.machine()).lower() not in X86_64:
        return False
    environ[VARIABLE] = "1"
    return True


def late_import_note() -> str | None:
    """A line for the user where TensorFlow runs without oneDNN's kernels only because it was imported
    before transferkit (a notebook's ``import tensorflow`` first, on a CPU without AVX-512); else None.
    Unset on x86-64 after ``import transferkit``, the variable says :func:`enable_onednn` came too late."""
    if VARIABLE in os.environ or platform.machine().lower() not in X86_64:
        return None
    try:
        from tensorflow.python.util import _pywrap_util_port  # no public API for this
    except ImportError:
        return None
    if _pywrap_util_port.IsMklEnabled():  # on by TensorFlow's own default (AVX-512 and newer)
        return None
    return (
        "Note: TensorFlow was imported before transferkit, so its oneDNN kernels are off on this CPU "
        f"(whole-network training about 30% slower): import transferkit first, or set {VARIABLE}=1 "
        "before TensorFlow loads."
    )
