"""fit's hooks for apps: their Keras callbacks, plain progress events, one bar per phase, quiet TF."""

import contextlib
import gc
import io
import logging
import os
import subprocess
import sys

import keras
import pytest

import transferkit
from transferkit.errors import TransferkitError
from transferkit.runtime.collector import collector_paused
from transferkit.testing import make_image_folder
from transferkit.training.progress import EpochEnded, Finished, PhaseLog, PhaseStarted, as_listener, fit_hooks

# A head phase on cached features, then the whole network: both ways a phase is fitted.
TWO_PHASES = """
name = "two_phases"
strategy = "fine_tune"
[backbone]
name = "tiny"
weights = "random"
image_size = 16
[data]
batch_size = 4
[[phases]]
name = "head"
train = "head"
epochs = 2
[[phases]]
name = "everything"
train = "all"
epochs = 2
learning_rate = 1e-4
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes", classes=2, per_class=8, size=24)


@pytest.fixture(scope="module")
def two_phases(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipes") / "two_phases.toml"
    path.write_text(TWO_PHASES)
    return path


class EpochRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs: list[int] = []
        self.fits = 0
        self.batch_calls: list[int] = []  # per fit: the calls of on_train_batch_end
        self.steps: list[int] = []  # per fit: the batches in an epoch

    def on_train_begin(self, logs=None):
        self.fits += 1
        self.batch_calls.append(0)
        self.steps.append(self.params["steps"])

    def on_train_batch_end(self, batch, logs=None):
        self.batch_calls[-1] += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch + 1)  # Keras counts across phases: history.csv's epoch column


@pytest.fixture(scope="module")
def observed(folder, two_phases, tmp_path_factory):
    """One fit with an app's callback and progress listener, at ``verbose=2`` (its printed log lines
    kept): (run, recorder, events, printed)."""
    recorder, events, printed = EpochRecorder(), [], io.StringIO()
    out = tmp_path_factory.mktemp("runs")
    with contextlib.redirect_stdout(printed):
        run = transferkit.fit(
            str(folder),
            recipe=two_phases,
            out=out,
            verbose=2,
            callbacks=[recorder],
            progress=events.append,
            report=False,  # no figures: nothing here reads them
        )
    return run, recorder, events, printed.getvalue()


@pytest.fixture(scope="module")
def with_bars(folder, two_phases, tmp_path_factory):
    """One fit at ``verbose=1`` started as in a notebook (the collector's freeze undone: a CLI command
    run in this process earlier froze its imports) with TensorFlow's logger at INFO: (run, printed,
    the logger's level at each epoch end and after the fit, the collector's freeze count at each
    epoch end and after the fit)."""
    logger = logging.getLogger("tensorflow")
    before = logger.level
    logger.setLevel(logging.INFO)
    levels, frozen, printed = [], [], io.StringIO()
    spy = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda *_: (levels.append(logger.level), frozen.append(gc.get_freeze_count()))
    )
    gc.unfreeze()
    try:
        with contextlib.redirect_stdout(printed):
            out = tmp_path_factory.mktemp("runs")
            run = transferkit.fit(
                str(folder), recipe=two_phases, out=out, verbose=1, callbacks=[spy], report=False
            )
        after = (logger.level, gc.get_freeze_count())
    finally:
        logger.setLevel(before)
    return run, printed.getvalue(), (levels, after[0]), (frozen, after[1])


def _history_epochs(run) -> list[tuple[str, int]]:
    import csv

    with open(run.run_dir / "history.csv", encoding="utf-8") as file:
        return [(row["phase"], int(row["epoch"])) for row in csv.DictReader(file)]


def test_app_callbacks_see_every_epoch_of_every_phase(observed):
    run, recorder, _, _ = observed
    history = _history_epochs(run)
    assert len({phase for phase, _ in history}) == 2
    assert recorder.fits == 2 and recorder.epochs == [epoch for _, epoch in history]


def test_a_head_phase_trains_a_whole_epoch_per_call_and_an_image_phase_a_batch(observed):
    # Batch hooks see one call per execution of the train function (Keras' steps_per_execution).
    run, recorder, _, _ = observed
    epochs = [sum(1 for name, _ in _history_epochs(run) if name == phase.name) for phase in run.recipe.phases]
    assert recorder.steps[0] > 1 and recorder.steps[1] > 1
    assert recorder.batch_calls == [epochs[0], epochs[1] * recorder.steps[1]]


def test_progress_events_come_phase_by_phase_then_finished(observed):
    run, _, events, _ = observed
    history = _history_epochs(run)
    expected = []
    for index, phase in enumerate(run.recipe.phases):
        expected.append(PhaseStarted(phase.name, index, 2, len(run.recipe.phases)))
        count = sum(1 for name, _ in history if name == phase.name)
        expected += [("epoch", phase.name, number) for number in range(1, count + 1)]
    seen = [("epoch", e.phase, e.epoch) if isinstance(e, EpochEnded) else e for e in events[:-1]]
    assert seen == expected
    assert all({"loss", "val_loss"} <= set(e.metrics) for e in events if isinstance(e, EpochEnded))
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.run_dir == run.run_dir
    assert (finished.accuracy, finished.headline, finished.summary) == (
        run.metrics.accuracy,
        run.headline,
        run.summary(),
    )


def test_an_object_listener_gets_only_the_events_it_has_methods_for():
    class Listener:
        def __init__(self):
            self.phases = []

        def phase_started(self, event):
            self.phases.append(event.phase)

    listener = Listener()
    dispatch = as_listener(listener)
    dispatch(PhaseStarted("head", 0, 3, 1))
    dispatch(EpochEnded("head", 1, {"loss": 0.5}))
    assert listener.phases == ["head"]


@pytest.mark.parametrize(
    ("callbacks", "progress", "message"),
    [
        (None, 42, "progress must be a callable"),
        ([print], None, "callbacks must be keras.callbacks.Callback"),
        ([keras.callbacks.ModelCheckpoint("best.keras")], None, "holds a ModelCheckpoint: transferkit saves"),
        ([keras.callbacks.BackupAndRestore("backup")], None, "holds a BackupAndRestore: transferkit saves"),
    ],
)
def test_unusable_hooks_are_a_fixable_error(callbacks, progress, message):
    with pytest.raises(TransferkitError, match=message):
        fit_hooks(callbacks, progress, verbose=0)


def test_verbose_fit_shows_one_bar_per_phase_instead_of_keras_epoch_lines(with_bars):
    run, printed, (levels, after), _ = with_bars
    for index, phase in enumerate(run.recipe.phases):
        assert f"phase {index + 1}/2 {phase.name}" in printed
    assert "Epoch 1/" not in printed  # Keras' own per-epoch output is off
    assert set(levels) == {logging.ERROR} and after == logging.INFO  # retracing notes muted, then restored


def test_importing_transferkit_quiets_tensorflow_unless_the_user_set_the_level():
    """Quiet whoever loads TensorFlow: here a module of the package imported directly, as an app's
    type hints do (the lines TensorFlow prints before it reads the level had come through)."""
    script = (
        "import gc, os, sys; from transferkit.reporting.runfolder import SavedRun; import transferkit; "
        "transferkit.predict; print(os.environ['TF_CPP_MIN_LOG_LEVEL'], 'tensorflow' in sys.modules, "
        "gc.isenabled(), any('Muted' in type(finder).__name__ for finder in sys.meta_path))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TRANSFERKIT_DEBUG")}
    quiet = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert quiet.stderr == "", quiet.stderr
    # the garbage collector, paused while TensorFlow loaded, runs again; the muting finder is gone
    assert quiet.stdout.split() == ["3", "True", "True", "False"]
    # transferkit only ever sets the level with setdefault, at its own import, and mutes nothing
    # where the user chose another; loading TensorFlow changes nothing there, so this child skips
    # it (~20 s of CPU on the CI machine).
    chosen = subprocess.run(
        [sys.executable, "-c", script.replace(" from transferkit.reporting.runfolder import SavedRun;", "")
         .replace(" transferkit.predict;", "")],
        env=env | {"TF_CPP_MIN_LOG_LEVEL": "1"},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert chosen.stdout.split() == ["1", "False", "True", "False"]


def test_a_cli_command_keeps_the_collector_off_what_its_imports_made():
    """One process per command: what the imports made (TensorFlow's ~700,000 objects) is frozen
    out of the collector's full passes for the process, and the collector runs for the rest."""
    script = (
        "import gc, sys; from transferkit.cli import main\n"
        "try:\n    main(['backbones'])\nexcept SystemExit:\n    pass\n"
        "print('tensorflow' in sys.modules, gc.get_freeze_count() > 100_000, gc.isenabled())"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRANSFERKIT_DEBUG"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "True True True"


def test_the_collector_pause_restores_the_state_it_found():
    assert gc.isenabled()
    with pytest.raises(ValueError), collector_paused():
        assert not gc.isenabled()
        raise ValueError("an import that fails")
    assert gc.isenabled()
    gc.disable()  # a caller that runs without the collector keeps it off
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def _cli_without_tensorflow(arguments: list[str]) -> tuple[int, str, str]:
    """Run the CLI in a fresh process: its exit status, stdout, stderr; the last line of stdout
    says whether TensorFlow and Keras were imported."""
    script = (
        "import sys; from transferkit.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as stop:\n    status = stop.code\n"
        "print(status, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TRANSFERKIT_DEBUG")}
    done = subprocess.run([sys.executable, "-c", script, *arguments], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    status, *imported = done.stdout.splitlines()[-1].split()
    return int(status), " ".join(imported), done.stderr


@pytest.mark.parametrize(
    "command", [[], ["fit"], ["compare"], ["predict"], ["export"], ["datasets", "export"]]
)
def test_cli_help_loads_no_tensorflow_and_prints_no_log_noise(command):
    status, imported, stderr = _cli_without_tensorflow([*command, "--help"])
    assert (status, imported, stderr) == (0, "False False", "")


@pytest.mark.parametrize(
    "arguments",
    [
        ["fit", "--output", "runs"],
        ["fit", "--data"],
        ["predict", "--top-k", "many"],
        ["export", "--format", "pdf"],
    ],
)
def test_a_usage_error_answers_before_tensorflow_loads(arguments):
    """A mistyped flag or a missing value is refused by the parser, without TensorFlow's 4-5 s."""
    status, imported, stderr = _cli_without_tensorflow(arguments)
    assert (status, imported) == (2, "False False")
    assert "Error:" in stderr and "Traceback" not in stderr


def test_log_lines_write_at_most_ten_lines_per_phase_and_the_last_epoch(capsys):
    log = PhaseLog(PhaseStarted("head", 0, 200, 2), initial_epoch=0)
    log.on_train_begin()
    for epoch in range(37):  # early stopping ends the phase at epoch 37 of 200
        log.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "val_accuracy": 0.5})
    log.on_train_end()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "phase 1/2 head: epoch 20/200",
        "phase 1/2 head: epoch 37/200",
    ]
    assert "val_accuracy 0.5" in lines[-1] and lines[-1].endswith(" s)")
    stopped = PhaseLog(PhaseStarted("head", 0, 200, 2), initial_epoch=0)  # stopped on a logged epoch
    for epoch in range(20):
        stopped.on_epoch_end(epoch, {"loss": 0.5})
    stopped.on_train_end()
    (line,) = capsys.readouterr().out.splitlines()  # its line once, with the phase's time
    assert line.startswith("phase 1/2 head: epoch 20/200") and line.endswith(" s)")


def test_log_lines_replace_keras_output_when_verbose_is_2(observed):
    run, _, _, printed = observed
    assert "Epoch 1/" not in printed
    for index, phase in enumerate(run.recipe.phases):
        assert f"phase {index + 1}/2 {phase.name}: epoch {phase.epochs}/{phase.epochs}" in printed


def test_the_cli_uses_no_deprecated_click_api():
    import warnings

    from click.testing import CliRunner

    from transferkit.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # click 8.2 deprecated Context.protected_args
        result = CliRunner().invoke(main, ["export", "--help"], catch_exceptions=False)
    assert result.exit_code == 0 and "Usage:" in result.output


def test_a_fit_leaves_older_objects_out_of_the_collectors_passes_and_puts_them_back(with_bars):
    _, _, _, (frozen, after) = with_bars
    assert frozen and min(frozen) > 0  # what existed before the fit, left alone while it ran
    assert after == 0  # and back in the collector's care afterwards


def test_a_caching_bar_over_an_image_pipeline_counts_to_the_batches_it_is_told():
    """An image pipeline's cardinality is unknown (it drops unreadable files as it goes): the bar
    takes the pass's batch count, so it shows a rate and an ETA rather than a bare count."""
    import tensorflow as tf

    from transferkit.training.features import caching_bar

    unknown = tf.data.Dataset.range(10).filter(lambda x: x < 5)
    assert caching_bar(unknown, 0, steps=7).total == 7
    assert caching_bar(tf.data.Dataset.range(4), 0, steps=7).total == 4  # a known count wins


def test_verbose_auto_draws_bars_on_a_terminal_and_lines_into_a_log(monkeypatch):
    """A script's output piped to a log file got progress bars' carriage returns."""
    from transferkit.training.progress import resolve_verbose

    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    assert resolve_verbose("auto") == 1
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    assert resolve_verbose("auto") == 2 and resolve_verbose(1) == 1 and resolve_verbose(0) == 0
    with pytest.raises(TransferkitError, match='verbose must be 0, 1, 2 or "auto"'):
        resolve_verbose(3)
