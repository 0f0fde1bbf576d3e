"""Reliability: an interruption loses at most the epoch in progress, one seed gives one result,
artifacts are written atomically, and what a run leaves behind is data that loads safely.

The end-to-end tests drive the real CLI in child processes (a ``kill -9`` must hit a real
process) with the tiny backbone, random weights and 32 px synthetic images. The two reference
runs start together in the background; the other tests wait for them only when they need them.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from transferkit import api, recipes
from transferkit.backbones.registry import get_backbone
from transferkit.errors import TransferkitError, on_command_line
from transferkit.fileio import atomic_path, staging_dir, write_text
from transferkit.recipes import AugmentConfig, Phase
from transferkit.reporting import runfolder
from transferkit.testing import (
    Interrupted,
    add_trainer_callback,
    child_env,
    make_image_folder,
    synthetic_batches,
    tiny_trainer,
)
from transferkit.testing import interrupt_at as stop_at
from transferkit.training.callbacks import AtomicBackupAndRestore, ResumableEarlyStopping, read_history
from transferkit.training.device import setup_device
from transferkit.training.model import build_classifier
from transferkit.training.trainer import Trainer, TrainState, seconds_saved

SEED = 1
# A short head phase, then a fine-tune phase long enough (6 epochs) that a kill sent when its first
# row appears always lands inside it. Early stopping is on, so its state is part of what resumes,
# with a patience that cannot run out within the phase: how many epochs a noisy 12-image
# validation set lets it run is not what this test is about (the exact-resume test below covers
# early stopping stopping).
PHASES = (
    Phase(name="warmup", train="head", epochs=2, learning_rate=1e-2),
    Phase(
        name="fine_tune",
        train="top",
        top_blocks=3,
        epochs=6,
        learning_rate=3e-3,
        schedule="cosine",
        patience=6,
    ),
)
PHASE_NAMES = [phase.name for phase in PHASES for _ in range(phase.epochs)]
TOTAL_EPOCHS = len(PHASE_NAMES)
RUN_TIMEOUT = 300  # seconds for one CLI run; ~15 s on an idle 2-core machine
POLL = 0.02
# Validation accuracy is measured on 12 images (1 image = 0.083). Interrupted and uninterrupted
# runs see batches in a different order after the resume, so they are compared within noise:
# both must have learnt the (separable) task, and differ by at most two images.
MIN_ACCURACY, MAX_ACCURACY_GAP = 0.8, 2 / 12 + 1e-9


# ---------------------------------------------------------------------------------------------
# Child processes


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("transferkit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "transferkit.cli"]


def _fit_args(out: Path, name: str = "r") -> list[str]:
    flags = (
        f"--data D --recipe recipe.toml --backbone tiny --weights random --batch-size 4 --seed {SEED} --quiet"
    )
    return ["fit", *flags.split(), "--out", str(out), "--name", name]


@dataclasses.dataclass
class _Child:
    process: subprocess.Popen
    log: Path  # stdout and stderr

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def _started(args: list[str], cwd: Path, log: Path):
    """A running CLI process that is killed (and reaped) however the block ends."""
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [*_cli(), *args],
            cwd=cwd,
            env=child_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield _Child(process, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def _run_cli(args: list[str], cwd: Path, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_cli(), *args],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _wait_until(condition, child: _Child, what: str, timeout: float = RUN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if child.process.poll() is not None:
            pytest.fail(
                f"the run exited ({child.process.returncode}) before {what}:\n{child.output()[-3000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout} s:\n{child.output()[-3000:]}")
        time.sleep(POLL)


def _rows(run_dir: Path, phase: str | None = None) -> int:
    return sum(1 for row in read_history(run_dir / "history.csv") if phase in (None, row["phase"]))


# ---------------------------------------------------------------------------------------------
# What a run folder must look like


def _assert_every_file_complete(run_dir: Path) -> None:
    """Every file a reader could open is whole: HDF5 readable to the last byte, zips with valid
    CRCs, JSON/TOML/CSV parseable with no short row. TensorBoard event files are skipped (its
    append-only record format has readers that drop a torn last record)."""
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        name = path.name
        if name.startswith(".") and ".tmp" in name:
            continue  # a temporary file of an atomic write cut short: never read, never renamed
        if name.endswith(".h5"):
            with h5py.File(path, "r") as handle:
                handle.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
        elif name.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                assert archive.testzip() is None, path
        elif name.endswith(".json"):
            json.loads(path.read_text(encoding="utf-8"))
        elif name.endswith(".toml"):
            tomllib.loads(path.read_text(encoding="utf-8"))
        elif name.endswith(".csv"):
            with path.open(newline="", encoding="utf-8") as handle:
                table = list(csv.reader(handle))
            assert table and all(len(row) == len(table[0]) for row in table), path


def _without_seconds(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "seconds"} for row in rows]


def _weights(path: Path) -> list[np.ndarray]:
    return keras.models.load_model(path, safe_mode=True, compile=False).get_weights()


def _accuracy(run_dir: Path) -> float:
    return json.loads((run_dir / "metrics.json").read_text())["validation"]["accuracy"]


# ---------------------------------------------------------------------------------------------
# Shared workspace and the two uninterrupted reference runs


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """``D`` (3 separable classes, 60 images: 48 train / 12 val) and ``recipe.toml``."""
    root = tmp_path_factory.mktemp("reliability")
    make_image_folder(root / "D", classes=3, per_class=20, size=32)
    recipe = dataclasses.replace(recipes.load_builtin("large_similar"), phases=PHASES)
    write_text(root / "recipe.toml", recipes.dumps(recipe))
    (root / "elsewhere").mkdir()
    return root


@pytest.fixture(scope="module")
def reference_runs(workspace):
    """Two uninterrupted runs with one seed, started together and running in the background.

    Yields a function that waits for them and returns their run folders. The second is asked for
    ``--name ../../r``, which must neither escape ``ref_b`` nor change any result.
    """
    with contextlib.ExitStack() as stack:
        children = [
            stack.enter_context(
                _started(_fit_args(workspace / f"ref_{tag}", name), workspace, workspace / f"{tag}.log")
            )
            for tag, name in (("a", "r"), ("b", "../../r"))
        ]

        def finished() -> tuple[Path, Path]:
            for child in children:
                try:
                    code = child.process.wait(timeout=RUN_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"reference run took over {RUN_TIMEOUT} s:\n{child.output()[-3000:]}")
                assert code == 0, child.output()[-3000:]
            return workspace / "ref_a" / "r", workspace / "ref_b" / "r"

        yield finished


# ---------------------------------------------------------------------------------------------
# 1. kill -9 in the second phase, then resume


def test_kill_9_in_the_second_phase_loses_at_most_the_current_epoch_and_resume_completes_the_run(
    workspace, reference_runs
):
    run_dir = workspace / "killed" / "r"
    with _started(_fit_args(workspace / "killed"), workspace, workspace / "killed.log") as child:
        _wait_until(lambda: _rows(run_dir, "fine_tune") >= 1, child, "a row of the second phase")
        os.kill(child.process.pid, signal.SIGKILL)
        assert child.process.wait(timeout=30) == -signal.SIGKILL

    state = TrainState.load(run_dir)
    assert state.completed_phases == 1, "the kill must land inside the second phase"
    assert not (run_dir / "model.keras").exists()
    assert (run_dir / "checkpoints" / "phase0.weights.h5").exists()
    _assert_every_file_complete(run_dir)
    rows_at_kill = read_history(run_dir / "history.csv")
    assert 3 <= len(rows_at_kill) < TOTAL_EPOCHS

    # A kill mid-write can leave a hidden temp file of an atomic write behind; resume removes it.
    (run_dir / ".history.csv.abc123.tmp.csv").write_text("half a row")
    # From another working directory, as a user coming back later would.
    resumed = _run_cli(["fit", "--resume", str(run_dir)], cwd=workspace / "elsewhere")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]

    history = read_history(run_dir / "history.csv")
    assert [int(row["epoch"]) for row in history] == list(range(1, TOTAL_EPOCHS + 1))
    assert [row["phase"] for row in history] == PHASE_NAMES
    # Finished epochs were kept, not trained again: only the epoch in progress at the kill may be
    # redone (its row can be written an instant before its backup).
    assert history[: len(rows_at_kill) - 1] == rows_at_kill[:-1]
    state = TrainState.load(run_dir)
    assert (state.completed_phases, state.epochs_done, state.phase_epochs) == (2, TOTAL_EPOCHS, [2, 6])
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished"
    assert 0 < info["seconds_before_the_stop"] < info["seconds"]  # the kill's run time is counted too
    assert not (run_dir / "backup").exists(), "backups must be cleaned up, their folder too"
    assert not list(run_dir.rglob(".*.tmp*")), "leftover temp files must be cleaned up"
    _assert_every_file_complete(run_dir)
    keras.models.load_model(run_dir / "model.keras", safe_mode=True)

    reference, _ = reference_runs()
    accuracy, reference_accuracy = _accuracy(run_dir), _accuracy(reference)
    print(f"validation accuracy: interrupted+resumed {accuracy:.3f}, uninterrupted {reference_accuracy:.3f}")
    assert min(accuracy, reference_accuracy) >= MIN_ACCURACY
    assert abs(accuracy - reference_accuracy) <= MAX_ACCURACY_GAP

    # Stronger: the resumed run replays the same batches, augmentations and dropout masks, so it is
    # the uninterrupted run, epoch by epoch (wall-clock seconds aside).
    def without_time(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert without_time(history) == without_time(read_history(reference / "history.csv"))
    assert (run_dir / "metrics.json").read_bytes() == (reference / "metrics.json").read_bytes()


# ---------------------------------------------------------------------------------------------
# 2. SIGTERM (and so Ctrl-C, which takes the same path)


def test_sigterm_exits_130_with_a_one_line_resume_hint_and_the_run_resumes(workspace):
    run_dir = workspace / "terminated" / "r"
    with _started(_fit_args(workspace / "terminated"), workspace, workspace / "terminated.log") as child:
        # A first epoch, backed up (its row is written an instant before its backup).
        _wait_until(lambda: _rows(run_dir) >= 1 and seconds_saved(run_dir) > 0, child, "a first epoch")
        child.process.send_signal(signal.SIGTERM)
        code = child.process.wait(timeout=60)
    output = child.output()
    assert code == 130, output[-3000:]
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Interrupted" in lines[-1] and "transferkit fit --resume" in lines[-1], lines[-3:]
    assert not (run_dir / "model.keras").exists()
    _assert_every_file_complete(run_dir)

    # The CLI resume is the kill -9 test's; this one resumes through the Python API, in-process.
    backups = [AtomicBackupAndRestore.saved_seconds(folder) for folder in (run_dir / "backup").glob("phase*")]
    before = max([TrainState.load(run_dir).seconds, *backups])  # the last saved progress's
    result = api.resume(run_dir, precision="float32", verbose=0)
    assert result.metrics.accuracy >= MIN_ACCURACY
    # The whole run's time: what it took up to its last saved epoch, and the resume's.
    assert 0 < result.seconds_before_stop == before < result.seconds
    since = result.seconds - before
    expected = f" s ({before:,.0f} before the stop, {since:,.0f} since the resume) | "
    assert f"{result.seconds:,.0f}{expected}" in result.summary()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["seconds_before_the_stop"] == round(before, 1) and "seconds_counted_from" not in info
    assert "before the stop" in (run_dir / "report.html").read_text()
    history = read_history(run_dir / "history.csv")
    assert [int(row["epoch"]) for row in history] == list(range(1, TOTAL_EPOCHS + 1))
    assert [row["phase"] for row in history] == PHASE_NAMES


# ---------------------------------------------------------------------------------------------
# 3. Same seed, same result


def test_two_runs_with_one_seed_give_identical_metrics_weights_and_history(reference_runs):
    first, second = reference_runs()
    assert (first / "metrics.json").read_bytes() == (second / "metrics.json").read_bytes()
    weights_a, weights_b = _weights(first / "model.keras"), _weights(second / "model.keras")
    assert len(weights_a) == len(weights_b)
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b, strict=True))
    # Every epoch's losses and accuracies too (the wall-clock column aside).
    assert _without_seconds(read_history(first / "history.csv")) == _without_seconds(
        read_history(second / "history.csv")
    )


def test_the_seed_is_recorded_in_run_json_and_recipe_toml(reference_runs):
    run_dir, _ = reference_runs()
    assert json.loads((run_dir / "run.json").read_text())["seed"] == SEED
    assert recipes.load(run_dir / "recipe.toml").seed == SEED


# ---------------------------------------------------------------------------------------------
# Resume in-process, where data order is fixed, so it must match an uninterrupted run exactly

SPEC = get_backbone("tiny")


def _exact_recipe() -> recipes.Recipe:
    """No augmentation, no dropout: every epoch of a run is a pure function of the weights."""
    recipe = recipes.with_overrides(
        recipes.load_builtin("large_similar"), backbone="tiny", weights="random", batch_size=8, seed=3
    )
    return dataclasses.replace(
        recipe,
        head=dataclasses.replace(recipe.head, dropout=0.0),
        augment=AugmentConfig(cached_passes=0),
        phases=(PHASES[0], dataclasses.replace(PHASES[1], patience=2)),
    )


def _exact_trainer(run_dir: Path) -> Trainer:
    recipe = _exact_recipe()
    setup_device("float32", recipe.seed)
    classifier = build_classifier(SPEC, SPEC.build(32), 3, recipe.head)
    _, train, ordered = synthetic_batches()
    # Validation labels are wrong on purpose: val_loss rises as the model learns, so early
    # stopping fires and restores the weights of an epoch before the interruption.
    val = train.map(lambda x, y: (x, (y + 1) % 3))
    return tiny_trainer(classifier, recipe, run_dir, train, val, ordered)


@pytest.fixture(scope="module")
def uninterrupted_exact_run(tmp_path_factory):
    """The exact recipe run without interruption: (run folder, optimizer steps, final weights)."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    trainer = _exact_trainer(run_dir)
    trainer.run()
    assert TrainState.load(run_dir).phase_epochs[1] < 6, (
        "early stopping must fire for the test to mean anything"
    )
    return run_dir, int(trainer._training_model.optimizer.iterations), trainer.classifier.model.get_weights()


@pytest.mark.parametrize(
    "interrupt_at", [1, 3], ids=["in-the-cached-feature-head-phase", "in-the-fine-tune-phase-with-patience"]
)
def test_resume_restores_weights_optimizer_schedule_and_early_stopping_exactly(
    tmp_path, monkeypatch, uninterrupted_exact_run, interrupt_at
):
    reference_dir, reference_steps, reference_weights = uninterrupted_exact_run
    with monkeypatch.context() as patch:
        add_trainer_callback(patch, lambda trainer: stop_at(interrupt_at))
        with pytest.raises(Interrupted):
            _exact_trainer(tmp_path).run()
    assert len(read_history(tmp_path / "history.csv")) == interrupt_at

    resumed = _exact_trainer(tmp_path)  # a fresh model, as in a new process
    resumed.run()

    reference_state = TrainState.load(reference_dir)
    assert reference_steps == reference_state.phase_epochs[1] * 3  # 3 steps per epoch
    # The optimizer step (and so the cosine schedule position) continues where it stopped.
    assert int(resumed._training_model.optimizer.iterations) == reference_steps
    assert TrainState.load(tmp_path) == reference_state
    assert _without_seconds(read_history(tmp_path / "history.csv")) == _without_seconds(
        read_history(reference_dir / "history.csv")
    )
    final = resumed.classifier.model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(final, reference_weights, strict=True))


@pytest.mark.parametrize("saved", ["checkpoint", "backup"])
def test_a_checkpoint_or_backup_that_does_not_fit_the_model_is_a_clear_error(tmp_path, monkeypatch, saved):
    with monkeypatch.context() as patch:
        add_trainer_callback(patch, lambda trainer: stop_at(3))
        with pytest.raises(Interrupted):
            _exact_trainer(tmp_path).run()  # phase 1 checkpointed, phase 2 backed up
    # Saved from another model, as a run started by another version's head would be: 4 classes.
    other = build_classifier(SPEC, SPEC.build(32), 4, _exact_recipe().head).model
    if saved == "checkpoint":
        path = tmp_path / "checkpoints" / "phase0.weights.h5"
        other.save_weights(path)
    else:
        path = tmp_path / "backup" / "phase1" / AtomicBackupAndRestore.STATE_FILE
        with np.load(path) as kept:
            arrays = dict(kept)
        np.savez(path, **{**arrays, **{f"w{i}": w for i, w in enumerate(other.get_weights())}})
    before = path.read_bytes()
    with pytest.raises(TransferkitError, match="does not fit the model built to resume") as error:
        _exact_trainer(tmp_path).run()
    assert str(path) in str(error.value) and path.read_bytes() == before


def test_a_run_in_mixed_precision_resumes_in_it_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    """mixed_float16 (a GPU's default) keeps its loss scaling in the optimizer's state: the resume
    trains in the precision the run started in, whatever ``auto`` would pick where it resumes."""
    import transferkit

    folder = make_image_folder(tmp_path / "data", classes=3, per_class=10, size=16)
    options = dict(backbone="tiny", weights="random", image_size=16, size="large", similar=False)
    options.update(epochs=3, precision="mixed_float16", verbose=0, out=tmp_path / "runs", report=False)
    reference = transferkit.fit(str(folder), name="reference", **options).run_dir
    with monkeypatch.context() as patch:
        add_trainer_callback(patch, lambda trainer: stop_at(4))  # the second epoch of the whole-network phase
        with pytest.raises(Interrupted):
            transferkit.fit(str(folder), name="stopped", **options)
    run_dir = tmp_path / "runs" / "stopped"
    assert json.loads((run_dir / "run.json").read_text())["precision"] == "mixed_float16"
    with pytest.raises(TransferkitError, match="trains in mixed_float16 precision"):
        transferkit.resume(run_dir, precision="float32", verbose=0)
    transferkit.resume(run_dir, verbose=0)  # "auto": float32 on this CPU, but the run's own here

    def without_time(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    history = read_history(run_dir / "history.csv")
    assert [row["phase"] for row in history] == ["warmup"] * 3 + ["retrain"] * 3
    assert without_time(history) == without_time(read_history(reference / "history.csv"))
    assert (run_dir / "metrics.json").read_bytes() == (reference / "metrics.json").read_bytes()


# ---------------------------------------------------------------------------------------------
# 4. Atomic artifacts


def _small_model(units: int = 2) -> keras.Model:
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(units, activation="softmax")(inputs))


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_model_save_failing_halfway_leaves_the_previous_model_keras_and_no_temp_files(
    tmp_path, monkeypatch
):
    runfolder.save_model(_small_model(), tmp_path)
    before = (tmp_path / "model.keras").read_bytes()

    def save_halfway(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(before[: len(before) // 2])  # a torn zip, then the disk is full
        _enospc()

    monkeypatch.setattr(keras.Model, "save", save_halfway)
    with pytest.raises(OSError) as error:
        runfolder.save_model(_small_model(3), tmp_path)
    assert error.value.errno == errno.ENOSPC
    assert (tmp_path / "model.keras").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    monkeypatch.undo()
    assert keras.models.load_model(tmp_path / "model.keras", safe_mode=True).output_shape == (None, 2)


def test_disk_full_inside_atomic_path_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "history.csv"
    write_text(target, "epoch\n1\n")
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(OSError):
        write_text(target, "epoch\n1\n2\n")
    with pytest.raises(OSError):
        with atomic_path(tmp_path / "checkpoints" / "phase0.weights.h5") as tmp:
            tmp.write_bytes(b"partial")
    assert target.read_text() == "epoch\n1\n"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "checkpoints",
        "history.csv",
    ]


def test_atomic_writes_and_staged_folders_get_the_modes_the_umask_gives(tmp_path):
    """A model served by another user must be readable: not the 0600 / 0700 of temporary files."""
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "labels.txt", "cat\n")
        assert (tmp_path / "labels.txt").stat().st_mode & 0o777 == 0o644
        (tmp_path / "labels.txt").chmod(0o640)
        write_text(tmp_path / "labels.txt", "dog\n")  # a replaced file keeps its mode
        assert (tmp_path / "labels.txt").stat().st_mode & 0o777 == 0o640
        assert staging_dir(tmp_path / "export").stat().st_mode & 0o777 == 0o755
        os.umask(0o077)
        write_text(tmp_path / "private.txt", "x")
        assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_the_per_epoch_backup_is_written_atomically(tmp_path, monkeypatch):
    """A failure (or a kill) while the backup is written leaves the previous backup whole."""
    trainer = _exact_trainer(tmp_path)
    callbacks, _ = trainer._callbacks(1, trainer.recipe.phases[1])
    backup = next(c for c in callbacks if isinstance(c, keras.callbacks.BackupAndRestore))
    model = trainer._training_graph()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    backup.set_model(model)
    backup.on_epoch_end(0)
    folder = Path(backup.backup_dir)
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert list(saved) == ["latest.npz"] and backup.saved_epoch(folder) == 1

    def save_halfway(handle, *args, **kwargs):
        handle.write(saved["latest.npz"][:100])
        _enospc()

    monkeypatch.setattr(np, "savez", save_halfway)
    with pytest.raises(OSError):
        backup.on_epoch_end(1)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == saved


def test_the_backup_carries_early_stopping_progress_in_the_same_file(tmp_path):
    """One file, one epoch: the weights, the optimizer and early stopping's wait, best and best weights."""

    def process():  # the callbacks and a freshly built model, as a new process has them
        model = _small_model()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.optimizer.build(model.trainable_variables)
        stopping = ResumableEarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
        backup = AtomicBackupAndRestore(str(tmp_path), stopping)
        for callback in (stopping, backup):
            callback.set_model(model)
            callback.on_train_begin()
        return model, stopping, backup

    model, stopping, backup = process()
    stopping.on_epoch_end(0, {"val_loss": 1.0})
    best = model.get_weights()
    model.set_weights([w + 1 for w in best])
    model.optimizer.iterations.assign(7)
    stopping.on_epoch_end(1, {"val_loss": 2.0})
    backup.on_epoch_end(1)
    last = model.get_weights()

    model, stopping, _ = process()
    assert (stopping.wait, stopping.best, stopping.best_epoch, model._initial_epoch) == (1, 1.0, 0, 2)
    assert all(np.array_equal(a, b) for a, b in zip(stopping.best_weights, best, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), last, strict=True))
    assert int(model.optimizer.iterations) == 7

    stopping.on_epoch_end(2, {"val_loss": 0.5})  # an improvement: its best weights are the backup's own
    backup = AtomicBackupAndRestore(str(tmp_path), stopping)
    backup.set_model(model)
    backup.on_epoch_end(2)
    assert [p.name for p in tmp_path.iterdir()] == ["latest.npz"]
    model, stopping, _ = process()
    assert (stopping.wait, stopping.best, stopping.best_epoch, model._initial_epoch) == (0, 0.5, 2, 3)
    assert all(np.array_equal(a, b) for a, b in zip(stopping.best_weights, last, strict=True))


# ---------------------------------------------------------------------------------------------
# 5. Safe loading: built-in layers only, no transferkit needed, recipes are data, names stay put


def _layer_configs(node):
    if isinstance(node, dict):
        if "class_name" in node:
            yield node
        for value in node.values():
            yield from _layer_configs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _layer_configs(value)


def test_model_keras_has_only_builtin_layers_and_loads_in_safe_mode_without_transferkit(
    reference_runs, tmp_path
):
    run_dir, _ = reference_runs()
    path = run_dir / "model.keras"
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    classes = {node["class_name"] for node in _layer_configs(config)}
    assert "Lambda" not in classes and "Functional" in classes
    modules = {node.get("module") for node in _layer_configs(config)} - {None}
    assert all(module.split(".")[0] == "keras" for module in modules), modules

    code = textwrap.dedent(
        """
        import sys
        import keras, numpy as np
        model = keras.models.load_model(sys.argv[1], safe_mode=True)
        probabilities = model.predict(np.full((2, 32, 32, 3), 128.0, "float32"), verbose=0)
        assert not [name for name in sys.modules if name.startswith("transferkit")], "needed transferkit"
        assert not any(type(layer).__name__ == "Lambda" for layer in model._flatten_layers())
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        print(probabilities.shape)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "(2, 3)"


def test_recipe_files_are_data_extra_keys_are_rejected_and_code_like_strings_stay_inert(tmp_path):
    text = recipes.dumps(_exact_recipe())
    for injected in (
        'exec = "import os"\n' + text,  # top level
        text.replace("[head]\n", '[head]\n__class__ = "os.system"\n'),  # in a table
        text + '__reduce__ = "os.system"\n',
    ):  # in the last [[phases]] entry
        with pytest.raises(TransferkitError, match="unknown key"):
            recipes.loads(injected)
    with pytest.raises(TransferkitError, match="expected int"):
        recipes.loads(text.replace("seed = 3", "seed = \"__import__('os').getpid()\""))

    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    recipe = dataclasses.replace(_exact_recipe(), description=code, name=f"{{{code}}}")
    loaded = recipes.loads(recipes.dumps(recipe))
    assert loaded.description == code and loaded.name == f"{{{code}}}"
    assert not marker.exists()


def test_a_malicious_cli_name_gives_a_run_folder_inside_out(workspace, reference_runs):
    _, run_dir = reference_runs()  # asked for --out ref_b --name ../../r
    assert run_dir == workspace / "ref_b" / "r" and (run_dir / "model.keras").exists()
    assert [p.name for p in (workspace / "ref_b").iterdir()] == ["r"]
    assert not (workspace.parent / "r").exists()


@pytest.mark.parametrize(
    "name",
    ["../../escape", "/tmp/escape", "..", ".", "a/../../b", "~root", "", "..\\..\\x", "class_0/../../../etc"],
)
def test_a_run_folder_name_cannot_escape_the_out_folder(tmp_path, name):
    out = tmp_path / "out"
    run_dir = runfolder.new_run_dir(out, "D", "large_similar", name)
    assert run_dir.resolve().parent == out.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("data", ["../..", "/", "tfds:../../etc", "data/../../.."])
def test_the_default_run_folder_name_from_the_data_path_stays_inside_out(tmp_path, data):
    out = tmp_path / "out"
    run_dir = runfolder.new_run_dir(out, data, "../recipe")
    assert run_dir.resolve().parent == out.resolve()


def test_a_run_name_that_is_taken_is_an_error_not_a_silent_suffix(tmp_path):
    first = runfolder.new_run_dir(tmp_path, "D", "small_similar", "same")
    with pytest.raises(
        TransferkitError, match=r"already exists\. Pick another name=\.\.\., .*transferkit\.resume\("
    ):
        runfolder.new_run_dir(tmp_path, "D", "small_similar", "same")
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]


def test_a_run_name_taken_by_a_finished_run_does_not_suggest_resuming_it(tmp_path):
    first = runfolder.new_run_dir(tmp_path, "D", "small_similar", "same")
    runfolder.save_run_info(first, {"status": "finished"})
    with pytest.raises(TransferkitError, match=r"holds a finished run\. Pick another name=\.\.\.") as info:
        runfolder.new_run_dir(tmp_path, "D", "small_similar", "same")
    assert "resume" not in str(info.value)


def test_the_resume_command_for_a_taken_run_name_is_quoted_and_the_callers_own(tmp_path):
    out = tmp_path / "my runs"
    runfolder.new_run_dir(out, "D", "small_similar", "same")
    with pytest.raises(TransferkitError) as info:
        runfolder.new_run_dir(out, "D", "small_similar", "same")
    assert f"`transferkit.resume({str(out / 'same')!r})`" in str(info.value)  # from Python
    with on_command_line(), pytest.raises(TransferkitError) as info:
        runfolder.new_run_dir(out, "D", "small_similar", "same")
    assert f"`transferkit fit --resume '{out / 'same'}'`" in str(info.value)


def test_an_out_folder_that_cannot_be_written_is_refused_before_the_data_is_read(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from transferkit.cli import main
    from transferkit.fileio import os as fileio_os

    (tmp_path / "afile").write_text("")
    missing_data = ["fit", "--data", str(tmp_path / "no_such_folder"), "--backbone", "tiny"]
    result = CliRunner().invoke(main, [*missing_data, "--out", str(tmp_path / "afile" / "runs")])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output, result.output
    monkeypatch.setattr(fileio_os, "access", lambda path, mode: False)  # root may write anywhere
    result = CliRunner().invoke(main, [*missing_data, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "is not writable by this user" in result.output, result.output


def test_an_out_folder_whose_parent_refuses_new_folders_is_one_line(tmp_path, monkeypatch):
    # /proc for root: writable by its permission bits, yet mkdir fails with ENOENT.
    from transferkit.fileio import require_writable_folder

    require_writable_folder(tmp_path / "a" / "b")  # creatable: accepted, and nothing left behind
    assert list(tmp_path.iterdir()) == []

    def refuse(self, *args, **kwargs):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(TransferkitError, match=r"^out=\.\.\. .*runs: cannot create it under .*No such file"):
        require_writable_folder(tmp_path / "runs")
    require_writable_folder(tmp_path)  # an existing folder is not created


def test_checking_an_out_folder_never_creates_or_removes_it(tmp_path, monkeypatch):
    """The check used to create ``--out`` and remove it again: a second process making its run
    folder there meanwhile (the other worker of a multi-worker job) lost it (FileNotFoundError)."""
    from transferkit.fileio import require_writable_folder

    made, original = [], Path.mkdir

    def recording(self, *args, **kwargs):
        made.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", recording)
    (tmp_path / "runs" / "other").mkdir(parents=True)  # what the other process has made
    made.clear()
    require_writable_folder(tmp_path / "fresh" / "runs")
    assert [path.parent for path in made] == [tmp_path] and made[0].name.startswith(".transferkit-probe-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_a_full_disk_is_one_line_and_exit_status_2_not_a_traceback(tmp_path):
    data = make_image_folder(tmp_path / "D", classes=2, per_class=6, size=16)
    script = textwrap.dedent(
        f"""
        import errno, os, sys
        from transferkit import fileio
        def full(*args):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fileio.os.fsync = full
        from transferkit.cli import main
        sys.argv = ["transferkit", "fit", "--data", {str(data)!r}, "--backbone", "tiny", "--weights",
                    "random", "--size", "small", "--similar", "--out", {str(tmp_path / "runs")!r}, "-q"]
        main()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=child_env(), timeout=RUN_TIMEOUT
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "Error: No space left on device. Free some space or choose another --out."
    ]
