"""Distribution on tf.distribute: the strategy, the cluster read from TF_CONFIG, and who writes.

``none`` trains on one device; ``mirrored`` on every local GPU (``MirroredStrategy``);
``multi-worker`` on every process of a cluster described by ``TF_CONFIG``
(``MultiWorkerMirroredStrategy``: synchronous all-reduce, one process per machine); ``auto`` is
``mirrored`` with several visible GPUs, else ``none``. Each replica takes ``batch_size`` images a
step, so the global batch is ``batch_size x replicas`` and the learning rate is scaled by
``replicas`` (the linear scaling rule, Goyal et al. 2017). Only the chief writes the run folder;
every other worker writes a folder of its own, ``<run folder>/workertemp_<index>``, removed when
the run finishes (Keras' multi-worker saving pattern). See docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from transferkit.console import resume_command
from transferkit.errors import TransferkitError, choices_error, setting
from transferkit.recipes import DISTRIBUTIONS
from transferkit.training.callbacks import finalize_states

TF_CONFIG = "TF_CONFIG"
WORKER_TASKS = ("chief", "worker")  # the tasks that train; an "evaluator" or "ps" task does not
WORKER_FOLDER_PREFIX = "workertemp_"
_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\''
)


@dataclass(frozen=True)
class Cluster:
    """This process's place in a multi-worker cluster, from ``TF_CONFIG``."""

    task_type: str
    task_index: int
    workers: int  # the training tasks: the chief (if listed) and the workers
    has_chief: bool = False  # whether the cluster lists a "chief" task

    @property
    def is_chief(self) -> bool:
        return is_chief_task(self.task_type, self.task_index, self.has_chief)

    def describe(self) -> str:
        role = "chief" if self.is_chief else "non-chief"
        return f"{self.task_type} {self.task_index} ({role}) of {self.workers} workers"


def is_chief_task(task_type: str | None, task_index: int | None, has_chief: bool = False) -> bool:
    """Keras' multi-worker rule: the ``chief`` task, or worker 0 of a cluster without one.

    A process without a task (no ``TF_CONFIG``) is its own chief.
    """
    if task_type in (None, "chief"):
        return True
    return task_type == "worker" and task_index == 0 and not has_chief


def is_chief(tf_config: str | Mapping | None = None) -> bool:
    """Whether this process writes the run folder: :func:`is_chief_task` of ``TF_CONFIG``'s task.

    Args:
        tf_config: the ``TF_CONFIG`` JSON (a string or a parsed dict); default: the environment's.
            An empty or missing one means a single process, which is its own chief.

    Example:
        >>> is_chief('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}')
        False
    """
    raw = os.environ.get(TF_CONFIG, "") if tf_config is None else tf_config
    if not raw:
        return True
    config = _parse(raw) if isinstance(raw, str) else raw
    task = config.get("task") or {}
    has_chief = bool((config.get("cluster") or {}).get("chief"))
    return is_chief_task(task.get("type"), task.get("index", 0), has_chief)


def read_cluster(environ: Mapping[str, str] | None = None) -> Cluster:
    """The cluster and this process's task from ``TF_CONFIG``; a clear error when it is missing or wrong."""
    raw = (os.environ if environ is None else environ).get(TF_CONFIG, "")
    if not raw.strip():
        raise TransferkitError(
            f"{setting('distribute', 'multi-worker')} needs the {TF_CONFIG} environment variable (the "
            f"cluster and this process's task), and it is not set. Set it on every worker, e.g. "
            f"{_TF_CONFIG_EXAMPLE} (see docs/DISTRIBUTED.md)."
        )
    config = _parse(raw)
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise _bad_config(f"it needs a 'cluster' and a 'task' object; received keys {sorted(config)}")
    hosts = {kind: cluster.get(kind, []) for kind in WORKER_TASKS}
    if not all(isinstance(h, list) and all(isinstance(a, str) for a in h) for h in hosts.values()):
        raise _bad_config("'cluster' must map task types to lists of 'host:port' strings")
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type not in WORKER_TASKS:
        raise choices_error(f"{TF_CONFIG} task type", task_type, WORKER_TASKS)
    if not isinstance(task_index, int) or not 0 <= task_index < len(hosts[task_type]):
        raise _bad_config(
            f"task index {task_index!r} is not one of the {len(hosts[task_type])} '{task_type}' "
            "addresses in 'cluster'"
        )
    workers = sum(len(h) for h in hosts.values())
    return Cluster(task_type, task_index, workers, has_chief=bool(hosts["chief"]))


def _parse(raw: str) -> dict:
    try:
        config = json.loads(raw)
    except ValueError as error:
        raise _bad_config(f"it is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise _bad_config(f"expected a JSON object, received {type(config).__name__}")
    return config


def _bad_config(problem: str) -> TransferkitError:
    return TransferkitError(
        f"{TF_CONFIG} is not usable: {problem}. Expected e.g. {_TF_CONFIG_EXAMPLE} (see docs/DISTRIBUTED.md)."
    )


def resolve_distribution(distribute: str, gpus: int) -> str:
    """``distribute`` with ``auto`` resolved: ``mirrored`` with several GPUs, else ``none``."""
    if distribute not in DISTRIBUTIONS:
        raise choices_error("distribute", distribute, DISTRIBUTIONS)
    if distribute == "auto":
        return "mirrored" if gpus > 1 else "none"
    return distribute


def make_strategy(distribution: str) -> tf.distribute.Strategy:
    """The strategy for a resolved distribution (see :func:`resolve_distribution`).

    ``multi-worker`` must be created before TensorFlow runs anything in the process (it
    configures the runtime's collective ops), so call this first, once per process.
    """
    if distribution == "mirrored":
        return tf.distribute.MirroredStrategy()
    if distribution != "multi-worker":
        return tf.distribute.get_strategy()
    read_cluster()  # a clear error before TensorFlow's own
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as error:
        raise TransferkitError(
            f"Could not start multi-worker training ({error}). It must be the first thing the "
            "process does with TensorFlow: use the CLI (one process per worker) or call "
            "transferkit.fit(..., distribute='multi-worker') first thing in a fresh process."
        ) from None


def shard_by_example(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` sharded across workers element by element (each example once per epoch).

    The batches are global: tf.distribute splits each into per-replica batches, and worker ``i``
    keeps every ``i``-th of those. (Sharding by file would need one file per shard; images come
    from a list of paths.) Without multi-worker training the option changes nothing.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def worker_run_dir(run_dir: Path, cluster: Cluster | None) -> Path:
    """Where this process writes: the run folder on the chief, ``<run folder>/workertemp_<i>`` elsewhere.

    A non-chief's folder has a fixed name so that a restarted job (``fit --resume``) finds its own
    backups again; :func:`remove_worker_dir` removes it when the run has finished.
    """
    if cluster is None or cluster.is_chief:
        return Path(run_dir)
    return Path(run_dir) / f"{WORKER_FOLDER_PREFIX}{cluster.task_type}{cluster.task_index}"


def remove_worker_dir(worker_dir: Path) -> None:
    """Delete a non-chief's folder, and the run folder above it when nothing else is in it."""
    shutil.rmtree(worker_dir, ignore_errors=True)
    try:
        worker_dir.parent.rmdir()  # only when empty: on a shared file system the chief's files stay
    except OSError:
        pass


@contextlib.contextmanager
def peer_failures(run_dir: Path, cluster: Cluster | None) -> Iterator[None]:
    """Turn "a worker stopped" (a collective op aborted) into the one line that says how to go on."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
        if cluster is None:
            raise
        chief_dir = run_dir if cluster.is_chief else run_dir.parent
        raise TransferkitError(
            f"A worker of the cluster stopped ({type(error).__name__} in a collective operation). "
            "Finished epochs are saved: restart every "
            f"worker with `{resume_command(chief_dir, distribute='multi-worker')}`."
        ) from None


def check_agreement(strategy: tf.distribute.Strategy, text: str, what: str) -> None:
    """Raise unless every worker passes the same ``text`` (e.g. the resolved recipe).

    Each worker decides for itself (the selector measures on its own copy of the data); two
    different decisions would train different graphs in step, which hangs or silently goes wrong.
    A 24-bit digest of ``text`` is gathered from every replica; any difference stops every worker.
    """
    digest = float(int(hashlib.sha256(text.encode()).hexdigest(), 16) % (1 << 24))  # exact in float32
    value = strategy.run(lambda: tf.constant([digest], tf.float32))
    digests = {float(d) for d in np.asarray(strategy.gather(value, axis=0)).reshape(-1)}
    if digests != {digest}:
        raise TransferkitError(
            f"The workers resolved different {what}s (the measured selection can differ between "
            "machines, or the workers were started with different flags). Start every worker with "
            f"the same command and pass the recipe explicitly ({setting('recipe')}, or {setting('size')} and "
            f"{setting('similar')})."
        )


def weights_sha256(model: keras.Model) -> str:
    """SHA-256 of the model's weights (values, in order): equal on every worker of a synchronous run."""
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(weights.tobytes())
    return digest.hexdigest()


def local_copy(model: keras.Model) -> keras.Model:
    """The model rebuilt outside any strategy, with the same weights.

    A model built under ``MultiWorkerMirroredStrategy`` gathers every prediction from all
    workers; the copy predicts on this process alone, for evaluation and the report.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    finalize_states(copy)
    return copy


class MultiWorkerModel(keras.Model):
    """A functional model that ``fit`` can train under ``MultiWorkerMirroredStrategy`` in Keras 3.

    Keras 3's TensorFlow trainer reduces each step's scalar logs with ``axis=0`` across workers
    and all-reduces a sample batch to build the model symbolically; both fail with more than one
    worker (tensorflow/tensorflow#72388). Here the step logs are rank 1 (the mean over workers
    comes back as a scalar) and the symbolic build is left to the first traced step, as Keras
    does without a strategy. Used for the training graph only; the saved classifier is plain.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        return None  # built when the train function is traced (Keras' path without a strategy)

    def train_step(self, data):
        return _rank_one(super().train_step(data))

    def test_step(self, data):
        return _rank_one(super().test_step(data))


def _rank_one(logs: dict) -> dict:
    """``logs`` as rank-1 tensors when several workers train (Keras then takes their mean)."""
    if _workers(tf.distribute.get_strategy()) < 2:  # Keras' local reduction keeps shapes as they are
        return logs
    return {key: tf.reshape(value, [1]) for key, value in logs.items()}


def _workers(strategy: tf.distribute.Strategy) -> int:
    """Training tasks in the strategy's cluster (1 without one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, sum(len(spec.get(kind, [])) for kind in WORKER_TASKS))
