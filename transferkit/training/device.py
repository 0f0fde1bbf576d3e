"""Where and how training runs: precision, determinism and distribution, set up explicitly.

Nothing here runs at import. :func:`setup_device` changes process-wide settings (Keras' global
precision policy, seeds, TensorFlow op determinism); the CLI calls it once per process, and the
Python API calls it inside :func:`device_scope`, which puts the policy back afterwards.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as _tf_config  # op determinism off again: no public API

from transferkit.errors import choices_error
from transferkit.recipes import DISTRIBUTIONS, PRECISIONS
from transferkit.training.callbacks import all_layers, finalize_states
from transferkit.training.distribute import Cluster, make_strategy, read_cluster, resolve_distribution


@dataclass(frozen=True)
class Device:
    """Where training runs and how: chosen once per process, before any model is built."""

    strategy: tf.distribute.Strategy
    gpus: int
    precision: str
    distribution: str = "none"  # resolved: "none" | "mirrored" | "multi-worker"
    cluster: Cluster | None = None  # multi-worker only

    @property
    def replicas(self) -> int:
        """Replicas training in step (all workers'): the global batch is ``batch_size`` times this."""
        return int(self.strategy.num_replicas_in_sync)

    def describe(self) -> str:
        where = f"{self.gpus} GPU(s)" if self.gpus else "CPU"
        strategy = type(self.strategy).__name__
        text = f"{where}, {self.precision} precision" + ("" if strategy.startswith("_") else f", {strategy}")
        if self.replicas > 1:
            text += f", {self.replicas} replicas"
        return text + (f", {self.cluster.describe()}" if self.cluster else "")


def environment() -> dict[str, object]:
    """What a run's figures depend on besides its data, recipe and seed: the software and the
    machine (``run.json``'s ``environment``).

    Op determinism repeats a CPU run exactly on the same kind of machine, not across kinds: other
    kernels sum floats in another order. The demo's Animal-MNIST fit, one commit, scored 0.920 on
    an AVX2 CPU and 0.893 on an AVX-512 one.

    Example:
        >>> sorted(environment())[:3]
        ['cpu', 'cpu_vector_extension', 'cpus']
    """
    from transferkit import __version__

    model, flags = _cpu_info()
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_vector_extension": vector_extension(flags, platform.machine()),
        "cpus": os.cpu_count(),
        "gpus": [gpu.name for gpu in tf.config.list_physical_devices("GPU")],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "transferkit": __version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "TensorFlow's default"),
    }


def vector_extension(flags: set[str], machine: str) -> str:
    """The widest SIMD extension among a CPU's ``flags`` (``/proc/cpuinfo``): "AVX-512", "AVX2",
    "AVX" or "SSE"; the architecture's name where there are no x86 flags (ARM, or no
    ``/proc/cpuinfo``).

    Example:
        >>> vector_extension({"sse4_2", "avx", "avx2", "fma"}, "x86_64")
        'AVX2'
    """
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse2", "SSE")):
        if flag in flags:
            return name
    return machine


def _cpu_info() -> tuple[str | None, set[str]]:
    """The CPU's model name and flags from ``/proc/cpuinfo`` (Linux); ``(None, set())`` elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError:
        return None, set()
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def precision_for(precision: str, weights: str) -> str:
    """``precision``, except that ``"auto"`` means float32 for a randomly initialised base.

    A random MobileNetV2's activations shrink to ~1e-12 through BatchNorm layers still at their
    initial statistics (torchvision's random init does the same), far below float16's smallest
    number (6e-8): under mixed_float16 every feature is 0 and the head learns only the class
    frequencies. Asking for mixed precision explicitly still gets it.

    Args:
        precision: as :func:`setup_device` takes it.
        weights: the recipe's ``[backbone] weights``.
    """
    return "float32" if precision == "auto" and weights == "random" else precision


def setup_device(precision: str = "auto", seed: int = 1337, distribute: str = "auto") -> Device:
    """Seed everything and pick precision and distribution for the hardware present.

    This changes process-wide state (Keras' global precision policy, the Python/NumPy/TensorFlow
    seeds and, on CPU, TensorFlow op determinism). The CLI calls it once per process; library
    code uses :func:`device_scope`, which restores what it changed.

    Args:
        precision: "auto" (mixed_float16 on GPU, float32 on CPU, where bf16 helped dense
            backbones but slowed MobileNets; see also :func:`precision_for`), "float32",
            "mixed_float16" or "mixed_bfloat16".
        seed: seeds Python, NumPy and TensorFlow. On CPU, TensorFlow's op determinism is also
            switched on, so two runs with one seed give identical weights.
        distribute: "auto" | "none" | "mirrored" | "multi-worker": see
            :mod:`transferkit.training.distribute`. The strategy is created before anything else
            touches TensorFlow (multi-worker training requires it).
    """
    if precision not in PRECISIONS:
        raise choices_error("precision", precision, PRECISIONS)
    if distribute not in DISTRIBUTIONS:
        raise choices_error("distribute", distribute, DISTRIBUTIONS)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised by an earlier call in this process
            pass
    distribution = resolve_distribution(distribute, len(gpus))
    cluster = read_cluster() if distribution == "multi-worker" else None
    strategy = make_strategy(distribution)
    if precision == "auto":
        precision = "mixed_float16" if gpus else "float32"
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(seed)
    if not gpus:
        tf.config.experimental.enable_op_determinism()
    return Device(strategy, len(gpus), precision, distribution, cluster)


@contextlib.contextmanager
def device_scope(precision: str = "auto", seed: int = 1337, distribute: str = "auto") -> Iterator[Device]:
    """:func:`setup_device` for the duration of a ``with`` block, then the caller's settings back.

    Restored on exit: Keras' global precision policy, Python's and NumPy's global random state,
    and TensorFlow op determinism (switched off again if it was off; TensorFlow has no public
    call for that, so the private one is used where it exists). TensorFlow's global seed cannot
    be read back; it stays at ``seed``. A multi-worker strategy configures the process's
    TensorFlow runtime for good (TensorFlow cannot undo it): the process is a worker from then on.

    Example:
        >>> with device_scope("float32", seed=1) as device:  # doctest: +SKIP
        ...     print(device.describe())
    """
    policy = keras.mixed_precision.global_policy()
    python_state, numpy_state = random.getstate(), np.random.get_state()
    deterministic = _op_determinism_enabled()
    try:
        yield setup_device(precision, seed, distribute)
    finally:
        keras.mixed_precision.set_global_policy(policy)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if not deterministic and _op_determinism_enabled():
            _tf_config.disable_op_determinism()


def _op_determinism_enabled() -> bool:
    check = getattr(_tf_config, "is_op_determinism_enabled", None)
    return bool(check()) if check is not None else False


def float32_model(model: keras.Model) -> keras.Model:
    """``model`` computing in float32: ``model`` itself where every layer does, else a copy of it
    built with float32 layers and given its weights (a run's variables are float32 under every
    precision policy, so nothing is rounded).

    A run trained under mixed precision (``mixed_float16``, a GPU's default, or
    ``mixed_bfloat16``) saves layers that compute in half precision, and converted as they are
    they do not deploy: the TFLite converter rejects float16 and bfloat16 convolutions, and
    onnxruntime refuses to load a graph with bfloat16 ones. Every export is converted from this
    copy, so a file runs in float32 on any device (``--quantize float16`` still halves a TFLite
    file's weights); the parity check compares it with the model as trained. On a machine without
    a GPU a float16 run is loaded as this copy too (:func:`for_this_machine`).

    Example:
        >>> from transferkit.backbones.registry import get_backbone
        >>> keras.mixed_precision.set_global_policy("mixed_bfloat16")
        >>> trained = get_backbone("tiny").build(32)
        >>> keras.mixed_precision.set_global_policy("float32")
        >>> trained.layers[-1].compute_dtype, float32_model(trained).layers[-1].compute_dtype
        ('bfloat16', 'float32')
    """
    if all(layer.dtype_policy.name == "float32" for layer in all_layers(model)):
        return model
    config = _float32_policies(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config, safe_mode=True)
    copy.set_weights(model.get_weights())
    finalize_states(copy)
    return copy


def _float32_policies(config):
    """A serialized model's config with every mixed-precision dtype policy replaced by float32."""
    if isinstance(config, list):
        return [_float32_policies(item) for item in config]
    if not isinstance(config, dict):
        return config
    if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
        name = config.get("config", {}).get("name", "")
        if name.startswith("mixed_"):
            return {**config, "config": {**config["config"], "name": "float32"}}
    return {key: _float32_policies(value) for key, value in config.items()}


def for_this_machine(model: keras.Model) -> keras.Model:
    """A loaded run's ``model`` as this machine computes it best: :func:`float32_model` where
    layers compute in float16 and no GPU is visible, ``model`` itself otherwise.

    A run trained on a GPU (``mixed_float16``, the default there) and loaded on a CPU to classify:
    CPUs have no fast float16 kernels, and the probabilities come back in float16. Measured on this
    project's 2-core AVX-512 VM, MobileNetV2 at 224 px, 32 images: 1.03 s as trained against 0.69 s
    in float32 (the largest difference in a probability 4e-5). bfloat16 stays as trained: it is only
    ever asked for, and fast where it is (AVX512-BF16, AMX).
    """
    float16 = any(layer.dtype_policy.compute_dtype == "float16" for layer in all_layers(model))
    if not float16 or tf.config.list_physical_devices("GPU"):
        return model
    return float32_model(model)
