"""Distribution: TF_CONFIG and the chief, strategy choice, sharding, and two real workers on loopback."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import transferkit
from transferkit import recipes
from transferkit.errors import TransferkitError
from transferkit.recipes import DISTRIBUTIONS, Phase
from transferkit.testing import child_env, make_image_folder
from transferkit.training.distribute import (
    is_chief,
    read_cluster,
    remove_worker_dir,
    resolve_distribution,
    shard_by_example,
    weights_sha256,
    worker_run_dir,
)
from transferkit.training.trainer import Trainer

WORKERS = ("127.0.0.1:1111", "127.0.0.1:2222")
CHILD_TIMEOUT = 240  # seconds for each child process; two or three at once run in ~40-60 s on 2 cores
SHA_LINE = re.compile(r"final weights sha256 ([0-9a-f]{64})")


def _tf_config(task_type: str, index: int, chief: bool = False, workers=WORKERS) -> str:
    cluster = {"worker": list(workers), **({"chief": ["127.0.0.1:3333"]} if chief else {})}
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


# ---------------------------------------------------------------------------------------------
# TF_CONFIG, the chief, the strategy choice


def test_is_chief_follows_keras_rule():
    assert is_chief(_tf_config("worker", 0))
    assert not is_chief(_tf_config("worker", 1))
    assert is_chief(_tf_config("chief", 0, chief=True))
    assert not is_chief(_tf_config("worker", 0, chief=True))  # a listed chief outranks worker 0
    assert is_chief("")  # no cluster: a single process is its own chief


def test_read_cluster_counts_the_training_tasks():
    cluster = read_cluster({"TF_CONFIG": _tf_config("worker", 1, chief=True)})
    assert (cluster.task_type, cluster.task_index, cluster.workers) == ("worker", 1, 3)
    assert not cluster.is_chief


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("", "not set"),
        ("{nope", "not valid JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', "'cluster' and a 'task'"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "task index 3"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "boss", "index": 0}}', "Unknown"),
    ],
)
def test_a_missing_or_wrong_tf_config_is_a_clear_error(value, fragment):
    with pytest.raises(TransferkitError, match=fragment) as error:
        read_cluster({"TF_CONFIG": value})
    assert "TF_CONFIG" in str(error.value)


def test_auto_is_mirrored_with_several_gpus_else_none():
    assert resolve_distribution("auto", 0) == "none"
    assert resolve_distribution("auto", 1) == "none"
    assert resolve_distribution("auto", 2) == "mirrored"
    assert resolve_distribution("multi-worker", 0) == "multi-worker"
    with pytest.raises(TransferkitError, match="Unknown distribute"):
        resolve_distribution("horovod", 0)
    assert set(DISTRIBUTIONS) == {"auto", "none", "mirrored", "multi-worker"}


def test_fit_multi_worker_without_tf_config_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    data = make_image_folder(tmp_path / "d", classes=2, per_class=6, size=16)
    with pytest.raises(TransferkitError, match="TF_CONFIG environment variable"):
        transferkit.fit(str(data), recipe="small_similar", backbone="tiny", distribute="multi-worker")


def test_shard_by_example_shards_by_data_not_by_file():
    dataset = shard_by_example(tf.data.Dataset.range(4))
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA


def test_a_non_chief_writes_inside_the_run_folder_and_cleans_up_after_itself(tmp_path):
    chief = read_cluster({"TF_CONFIG": _tf_config("worker", 0)})
    other = read_cluster({"TF_CONFIG": _tf_config("worker", 1)})
    run_dir = tmp_path / "runs" / "r"
    assert worker_run_dir(run_dir, chief) == run_dir == worker_run_dir(run_dir, None)
    own = worker_run_dir(run_dir, other)
    assert own.parent == run_dir and own.name == "workertemp_worker1"
    (own / "backup").mkdir(parents=True)
    remove_worker_dir(own)
    assert not run_dir.exists()  # nothing of the chief's was there (another host): all gone
    own.mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")  # a shared file system: the chief's files stay
    remove_worker_dir(own)
    assert not own.exists() and (run_dir / "run.json").exists()


# ---------------------------------------------------------------------------------------------
# The trainer's multi-worker behaviour, in one process (no cluster needed)


def test_multi_worker_trainer_trains_head_phases_through_the_frozen_base_and_scales_the_rate(
    tmp_path, capsys
):
    from transferkit import session as stages

    data = make_image_folder(tmp_path / "d", classes=2, per_class=8, size=16)
    recipe = recipes.with_overrides(
        recipes.load_builtin("small_similar"), backbone="tiny", weights="random", image_size=16, epochs=1
    )
    splits = stages.load_splits(str(data), recipe)
    session = stages.prepare(recipe, splits, False, "small", True, {}, verbose=0)
    base_before = [w.copy() for w in session.classifier.extractor.get_weights()]
    head_before = [w.copy() for w in session.classifier.head.get_weights()]
    train, val, ordered = stages.datasets_for(recipe, session.spec, splits, replicas=2)
    trainer = Trainer(
        session.classifier,
        session.spec,
        recipe,
        train,
        val,
        ordered,
        tmp_path / "run",
        num_classes=2,
        steps_per_epoch=2,
        validation_steps=1,
        replicas=2,
        multi_worker=True,
    )
    trainer.run()
    printed = capsys.readouterr().out
    assert "Caching features" not in printed
    graph = trainer._training_model
    assert graph is not None and type(graph).__name__ == "MultiWorkerModel"
    expected = 2 * recipe.phases[0].learning_rate
    assert float(graph.optimizer.learning_rate) == pytest.approx(expected)
    for before, after in zip(base_before, session.classifier.extractor.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    head_after = session.classifier.head.get_weights()
    changed = [not np.allclose(b, a) for b, a in zip(head_before, head_after, strict=True)]
    assert any(changed)


# ---------------------------------------------------------------------------------------------
# Two workers on 127.0.0.1 against one process on the same global batch


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("transferkit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "transferkit.cli"]


@contextlib.contextmanager
def _children(commands: list[tuple[list[str], dict[str, str], Path]], cwd: Path):
    """Start every command at once; kill (and reap) whatever still runs when the block ends."""
    processes = []
    try:
        for args, env, log in commands:
            with open(log, "wb") as handle:
                processes.append(
                    subprocess.Popen(
                        [*_cli(), *args],
                        cwd=cwd,
                        env=env,
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def _comparable_recipe(learning_rate: float) -> recipes.Recipe:
    """Fine-tune the whole tiny network with nothing random but the (seeded) shuffle: no
    augmentation, no dropout, so one process and two workers compute the same steps."""
    recipe = recipes.with_overrides(
        recipes.load_builtin("large_dissimilar"), backbone="tiny", weights="random", image_size=16
    )
    return dataclasses.replace(
        recipe,
        head=dataclasses.replace(recipe.head, dropout=0.0),
        augment=dataclasses.replace(recipe.augment, cached_passes=0),
        phases=(Phase(name="all", train="all", epochs=3, learning_rate=learning_rate),),
    )


def _history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_workers_on_loopback_train_in_step_and_match_one_process_on_the_same_global_batch(tmp_path):
    make_image_folder(tmp_path / "D", classes=2, per_class=20, size=16, seed=3)
    # A rate low enough that no loss reaches 0 in 3 epochs (the synthetic classes separate easily),
    # so the comparison below tells the scaled rate (2e-4) from the unscaled one (losses 5-100% apart).
    per_replica, rate = 4, 1e-4
    (tmp_path / "two.toml").write_text(recipes.dumps(_comparable_recipe(rate)))
    # One process on the global batch (2 x 4) at the rate two replicas scale to.
    (tmp_path / "one.toml").write_text(recipes.dumps(_comparable_recipe(2 * rate)))
    common = ["fit", "--data", "D", "--out", "runs", "--seed", "7"]
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    commands = [
        (
            [*common, "--recipe", "two.toml", "--batch-size", str(per_replica), "--name", "two"]
            + ["--distribute", "multi-worker"],
            child_env(TF_CONFIG=_tf_config("worker", index, workers=workers)),
            tmp_path / f"worker{index}.log",
        )
        for index in (0, 1)
    ]
    commands.append(
        (
            [*common, "--recipe", "one.toml", "--batch-size", str(2 * per_replica), "--name", "one"]
            + ["--distribute", "none"],
            child_env(),
            tmp_path / "one.log",
        )
    )
    # The workers first, the single process after them: a third TensorFlow process beside them (and
    # the other test workers) on 2 cores once starved a worker past the coordination service's
    # heartbeat ("heartbeat timeout", the run aborted).
    for batch in (commands[:2], commands[2:]):
        with _children(batch, tmp_path) as processes:
            for process, (_, _, log) in zip(processes, batch, strict=True):
                try:
                    code = process.wait(timeout=CHILD_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pytest.fail(
                        f"{log.name} still running after {CHILD_TIMEOUT} s:\n{log.read_text()[-3000:]}"
                    )
                assert code == 0, f"{log.name} exited {code}:\n{log.read_text()[-3000:]}"
    logs = [log.read_text() for _, _, log in commands]

    chief_dir, single_dir = tmp_path / "runs" / "two", tmp_path / "runs" / "one"
    for name in ("model.keras", "metrics.json", "report.html", "history.csv", "recipe.toml", "labels.txt"):
        assert (chief_dir / name).is_file(), name
    assert [p.name for p in chief_dir.glob("workertemp_*")] == []  # the other worker cleaned up
    run = json.loads((chief_dir / "run.json").read_text())
    assert run["status"] == "finished"
    assert run["distribution"] == {
        "strategy": "multi-worker",
        "replicas": 2,
        "workers": 2,
        "per_replica_batch": per_replica,
        "global_batch": 2 * per_replica,
        "learning_rate_scale": 2,
        "features_cached": False,
    }

    # Identical final weights on both workers, and they are the weights the chief saved.
    digests = [SHA_LINE.findall(text) for text in logs[:2]]
    assert all(len(found) == 1 for found in digests), digests
    assert digests[0] == digests[1]
    import keras

    saved = keras.models.load_model(chief_dir / "model.keras")
    assert weights_sha256(saved) == digests[0][0]

    # The same steps as one process on the global batch: the same losses, epoch by epoch.
    two, one = _history(chief_dir), _history(single_dir)
    assert len(two) == len(one) == 3
    assert min(float(r["loss"]) for r in one) > 1e-4
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(
            [float(r[key]) for r in two], [float(r[key]) for r in one], rtol=1e-3, err_msg=key
        )
    metrics_two = json.loads((chief_dir / "metrics.json").read_text())
    metrics_one = json.loads((single_dir / "metrics.json").read_text())
    assert metrics_two["test"]["accuracy"] == pytest.approx(metrics_one["test"]["accuracy"], abs=1 / 6 + 1e-9)


def test_two_workers_in_mixed_float16_agree_on_overflowing_steps_and_finish(tmp_path):
    """mixed_float16 is a GPU's default. Keras' loss scaling judged each worker's gradients on its
    own: a worker whose step overflowed skipped the gradients' all-reduce the other waited in, and
    the job hung in the first whole-network step (its first steps overflow at the initial scale)."""
    make_image_folder(tmp_path / "D", classes=2, per_class=20, size=16, seed=3)
    args = ["fit", "--data", "D", "--out", "runs", "--name", "mixed", "--backbone", "tiny"]
    args += ["--weights", "random", "--image-size", "16", "--size", "large", "--dissimilar", "--epochs", "2"]
    args += ["--precision", "mixed_float16", "--distribute", "multi-worker", "--batch-size", "4"]
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    commands = [
        (args, child_env(TF_CONFIG=_tf_config("worker", index, workers=workers)), tmp_path / f"w{index}.log")
        for index in (0, 1)
    ]
    with _children(commands, tmp_path) as processes:
        for process, (_, _, log) in zip(processes, commands, strict=True):
            try:
                code = process.wait(timeout=CHILD_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{log.name} still running after {CHILD_TIMEOUT} s:\n{log.read_text()[-3000:]}")
            assert code == 0, f"{log.name} exited {code}:\n{log.read_text()[-3000:]}"
    run_dir = tmp_path / "runs" / "mixed"
    assert json.loads((run_dir / "run.json").read_text())["precision"] == "mixed_float16"
    assert [row["phase"] for row in _history(run_dir)] == ["warmup"] * 2 + ["retrain"] * 2


def test_a_stopped_worker_is_reported_with_the_resume_command(tmp_path):
    from transferkit.training.distribute import peer_failures

    other = read_cluster({"TF_CONFIG": _tf_config("worker", 1)})
    own = worker_run_dir(tmp_path / "r", other)
    with pytest.raises(TransferkitError, match=r"transferkit\.resume\('.*r', distribute='multi-worker'\)"):
        with peer_failures(own, other):
            raise tf.errors.UnavailableError(None, None, "Collective ops is aborted by: task 0")
    with pytest.raises(tf.errors.UnavailableError):  # not a cluster: not ours to explain
        with peer_failures(tmp_path, None):
            raise tf.errors.UnavailableError(None, None, "gone")


def test_local_copy_predicts_exactly_like_the_model(tmp_path):
    from transferkit.training.distribute import local_copy

    data = make_image_folder(tmp_path / "d", classes=2, per_class=8, size=16)
    run = transferkit.fit(
        str(data),
        recipe="small_similar",
        backbone="tiny",
        weights="random",
        image_size=16,
        epochs=1,
        out=tmp_path / "runs",
        verbose=0,
    )
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    copy = local_copy(run.model)
    np.testing.assert_allclose(copy.predict_on_batch(images), run.model.predict_on_batch(images), rtol=1e-6)
    assert weights_sha256(copy) == weights_sha256(run.model)


def test_workers_that_resolved_different_recipes_stop_with_a_clear_error():
    from transferkit.training.distribute import check_agreement

    check_agreement(tf.distribute.get_strategy(), "recipe text", "recipe")  # one worker agrees with itself

    class TwoWorkersDisagree:  # what gathering the digests returns when the other worker differs
        def run(self, fn):
            return fn()

        def gather(self, value, axis):
            return tf.concat([value, value + 1], axis=axis)

    with pytest.raises(
        TransferkitError, match=r"different recipes.*\(recipe=\.\.\., or size=\.\.\. and similar="
    ):
        check_agreement(TwoWorkersDisagree(), "recipe text", "recipe")
