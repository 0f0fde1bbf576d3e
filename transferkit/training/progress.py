"""What a fit tells while it runs: plain progress events for apps, one live bar per phase for people.

An app passes ``fit(..., progress=listener)`` and receives, in this order, for each phase a
:class:`PhaseStarted` then one :class:`EpochEnded` per epoch, and at the end one
:class:`Finished`; it never has to parse stdout. ``fit(..., callbacks=[...])`` adds the app's
own Keras callbacks to every phase's ``model.fit``. With ``verbose=1`` a fit draws one bar per
phase (epochs as its unit, the latest metrics beside it) in a terminal and in Jupyter (a widget
when ``ipywidgets`` is installed, else one line redrawn in place) instead of Keras' bar per epoch.
With ``verbose=2`` (the CLI's choice when stdout is not a terminal: a log file, CI) each phase
writes at most :data:`LOG_LINES_PER_PHASE` plain lines instead of Keras' two lines per epoch.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from transferkit.errors import TransferkitError

LISTENER_METHODS = {"PhaseStarted": "phase_started", "EpochEnded": "epoch_ended", "Finished": "finished"}
BAR_REFRESH_SECONDS = 0.5  # at most this often a bar redraws within an epoch
LOG_LINES_PER_PHASE = 10  # verbose=2: a 200-epoch head phase logs every 20th epoch, and its last


@dataclass(frozen=True)
class PhaseStarted:
    """A phase of the recipe starts training.

    Attributes:
        phase: its name in the recipe (e.g. ``"head"``, ``"fine_tune"``).
        index: its position, 0-based.
        epochs: epochs it will train at most (early stopping may end it sooner).
        phases: how many phases the recipe has.
    """

    phase: str
    index: int
    epochs: int
    phases: int


@dataclass(frozen=True)
class EpochEnded:
    """An epoch of a phase ended.

    Attributes:
        phase: the phase's name.
        epoch: the epoch's number within the phase, from 1.
        metrics: Keras' logs as floats: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ...
    """

    phase: str
    epoch: int
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class Finished:
    """The fit is done and its run folder written.

    Attributes:
        summary: :meth:`transferkit.FitResult.summary`'s line.
        run_dir: the run folder.
        accuracy: the headline accuracy (held-out test split, else validation).
        headline: ``"test"`` or ``"validation"``: which split ``accuracy`` is on.
        seconds: the fit's wall time.
    """

    summary: str
    run_dir: Path | None
    accuracy: float | None
    headline: str
    seconds: float


ProgressEvent = PhaseStarted | EpochEnded | Finished
Listener = Callable[[ProgressEvent], Any]


def as_listener(progress: object | None) -> Listener | None:
    """``progress`` as one function of an event.

    Args:
        progress: a callable taking an event, or an object with any of the methods
            ``phase_started``, ``epoch_ended``, ``finished`` (each taking that event), or None.
    """
    if progress is None or callable(progress):
        return progress
    if not any(hasattr(progress, name) for name in LISTENER_METHODS.values()):
        raise TransferkitError(
            f"progress must be a callable taking an event, or an object with any of the methods "
            f"{', '.join(LISTENER_METHODS.values())}; received {type(progress).__name__}."
        )

    def dispatch(event: ProgressEvent) -> None:
        method = getattr(progress, LISTENER_METHODS[type(event).__name__], None)
        if method is not None:
            method(event)

    return dispatch


@dataclass(frozen=True)
class FitHooks:
    """What a fit adds to every phase's ``model.fit``: the app's callbacks, its listener, the bars."""

    callbacks: tuple[keras.callbacks.Callback, ...] = ()
    listener: Listener | None = None
    bars: bool = False
    log_lines: bool = False  # plain, sparse lines (logs, CI) instead of Keras' per-epoch output

    def phase_callbacks(self, index: int, phase: str, epochs: int, phases: int, initial_epoch: int) -> list:
        """The Keras callbacks of phase ``index`` (which starts at Keras epoch ``initial_epoch``)."""
        started = PhaseStarted(phase, index, epochs, phases)
        extra: list[keras.callbacks.Callback] = list(self.callbacks)
        if self.listener is not None:
            extra.append(EventCallback(self.listener, started, initial_epoch))
        if self.bars:
            extra.append(PhaseBar(started, initial_epoch))
        elif self.log_lines:
            extra.append(PhaseLog(started, initial_epoch))
        return extra

    def keras_verbose(self, verbose: int) -> int:
        """Keras' own output: none when the bars or the log lines show progress."""
        return 0 if self.bars or self.log_lines else verbose

    def finished(self, result: Any) -> None:
        """Tell the listener the fit is done (``result`` is the :class:`transferkit.FitResult`)."""
        if self.listener is None:
            return
        accuracy = result.metrics.accuracy if result.metrics is not None else None
        self.listener(Finished(result.summary(), result.run_dir, accuracy, result.headline, result.seconds))


def fit_hooks(
    callbacks: Sequence[keras.callbacks.Callback] | None, progress: object | None, verbose: int
) -> FitHooks:
    """The hooks of a fit called with these arguments (bars when ``verbose == 1``)."""
    callbacks = tuple(callbacks or ())
    for callback in callbacks:
        if not isinstance(callback, keras.callbacks.Callback):
            raise TransferkitError(
                f"callbacks must be keras.callbacks.Callback instances; received "
                f"{type(callback).__name__}. Subclass keras.callbacks.Callback, or use "
                "keras.callbacks.LambdaCallback(on_epoch_end=...)."
            )
        if isinstance(callback, SAVES_ITS_OWN):
            raise TransferkitError(
                f"callbacks holds a {type(callback).__name__}: transferkit saves and restores the model "
                "itself (checkpoints/ after every phase, model.keras at the end, resume() after a stop), "
                "and a callback's model is a phase's training graph (a head on cached features, in a "
                "head phase), not the image classifier. Leave it out; the run folder has every phase's "
                "epochs in history.csv."
            )
    return FitHooks(callbacks, as_listener(progress), bars=verbose == 1, log_lines=verbose == 2)


# Callbacks that save or restore the model: transferkit's own checkpoints do that for the classifier
SAVES_ITS_OWN = (keras.callbacks.ModelCheckpoint, keras.callbacks.BackupAndRestore)


class EventCallback(keras.callbacks.Callback):
    """Sends a phase's :class:`PhaseStarted` and :class:`EpochEnded` events to a listener."""

    def __init__(self, listener: Listener, started: PhaseStarted, initial_epoch: int):
        super().__init__()
        self.listener, self.started, self.initial_epoch = listener, started, initial_epoch

    def on_train_begin(self, logs=None):
        self.listener(self.started)

    def on_epoch_end(self, epoch, logs=None):
        metrics = {name: float(value) for name, value in (logs or {}).items()}
        self.listener(EpochEnded(self.started.phase, epoch - self.initial_epoch + 1, metrics))


class PhaseBar(keras.callbacks.Callback):
    """One progress bar for a phase: epochs as its unit, the latest metrics beside it."""

    def __init__(self, started: PhaseStarted, initial_epoch: int):
        super().__init__()
        self.started, self.initial_epoch = started, initial_epoch
        self.bar = None
        self._drawn = 0.0

    def on_train_begin(self, logs=None):
        s = self.started
        self.bar = progress_bar(
            total=s.epochs, desc=f"phase {s.index + 1}/{s.phases} {s.phase}", unit="epoch"
        )

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        steps = self.params.get("steps")
        if self.bar is None or now - self._drawn < BAR_REFRESH_SECONDS or not steps:
            return
        self._drawn = now
        loss = (logs or {}).get("loss")
        detail = f"batch {batch + 1}/{steps}" + (f", loss {float(loss):.3g}" if loss is not None else "")
        self.bar.set_postfix_str(detail)

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is None:
            return
        self.bar.n = epoch - self.initial_epoch + 1  # a resumed phase starts past its first epochs
        self.bar.set_postfix_str(_short(logs or {}))

    def on_train_end(self, logs=None):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class PhaseLog(keras.callbacks.Callback):
    """A phase's progress as at most :data:`LOG_LINES_PER_PHASE` lines, plus its last epoch.

    For output that is read afterwards (a log file, CI): ``phase 1/2 head: epoch 20/200, loss
    0.412, accuracy 0.875, ...`` every ``ceil(epochs / LOG_LINES_PER_PHASE)`` epochs, and the epoch
    the phase ends on (its last, or where early stopping ended it) with the phase's time.
    """

    def __init__(self, started: PhaseStarted, initial_epoch: int):
        super().__init__()
        self.started, self.initial_epoch = started, initial_epoch
        self.every = max(1, -(-started.epochs // LOG_LINES_PER_PHASE))
        self._began = time.monotonic()
        self._last: tuple[int, Mapping[str, float]] | None = None
        # A periodic line is written once the next epoch ends: where the phase stops on that very
        # epoch (early stopping), the last line alone gives it, with the phase's time.
        self._due: tuple[int, Mapping[str, float]] | None = None

    def on_train_begin(self, logs=None):
        self._began = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if self._due is not None:
            self._write(*self._due)
            self._due = None
        number = epoch - self.initial_epoch + 1
        self._last = (number, dict(logs or {}))
        if number % self.every == 0 and number < self.started.epochs:
            self._due = self._last

    def on_train_end(self, logs=None):
        if self._last is not None:
            number, last = self._last
            self._write(number, last, f" ({time.monotonic() - self._began:.0f} s)")

    def _write(self, number: int, logs: Mapping[str, float], suffix: str = "") -> None:
        s = self.started
        print(
            f"phase {s.index + 1}/{s.phases} {s.phase}: epoch {number}/{s.epochs}, {_short(logs)}{suffix}",
            flush=True,
        )


def progress_bar(**options):
    """A tqdm bar: Jupyter's widget in a notebook with ``ipywidgets``, else text redrawn in place."""
    if _in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm

        return tqdm(**options)
    from tqdm.std import tqdm

    return tqdm(file=sys.stdout, dynamic_ncols=True, mininterval=BAR_REFRESH_SECONDS, **options)


def resolve_verbose(verbose: int | str) -> int:
    """``"auto"``: progress bars on a terminal or in a notebook, one line per epoch elsewhere (a log
    file, a pipe: no carriage returns in it), as the command line does; an int as given."""
    if verbose == "auto":
        return 1 if _in_notebook() or sys.stdout.isatty() else 2
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise TransferkitError(f'verbose must be 0, 1, 2 or "auto" (got {verbose!r}).')
    return verbose


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (not a terminal IPython)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _short(logs: Mapping[str, float]) -> str:
    """``loss 0.412, accuracy 0.875, val_loss ...``: every metric, three significant digits."""
    return ", ".join(f"{name} {float(value):.3g}" for name, value in logs.items())
