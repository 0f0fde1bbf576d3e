"""Run a recipe's phases: set trainable -> compile -> fit, with resumable, atomic checkpoints.

Each phase reads top to bottom as: choose what trains, re-compile (Keras ignores a change of
``trainable`` until then), fit. Frozen-base phases train the head on cached features
(:mod:`transferkit.training.head_phase`); the others fit the whole graph with augmentation inside
it (:mod:`transferkit.training.network_phase`). Epoch numbers continue across phases, so
``history.csv`` and TensorBoard show one timeline.

Interruptions lose at most the current epoch (see :mod:`transferkit.training.callbacks`), and
every finished phase leaves ``checkpoints/phase<i>.weights.h5`` plus ``state.json``. All of it
is written atomically. ``fit --resume RUN_DIR`` picks up from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from transferkit.backbones.registry import BackboneSpec
from transferkit.data.cache_budget import CacheBudget
from transferkit.errors import TransferkitError, saved_state_error, setting
from transferkit.fileio import atomic_path, write_json, write_text
from transferkit.recipes import AUTO_LEARNING_RATE, Phase, Recipe, dumps, low_res_epochs
from transferkit.training.augment import RandomAffine, build_augmentation, is_identity, noise_only
from transferkit.training.callbacks import (
    AtomicBackupAndRestore,
    EpochTensorBoard,
    HistoryWriter,
    Reseed,
    ResumableEarlyStopping,
    read_history,
)
from transferkit.training.class_weights import class_weights
from transferkit.training.feature_bank import CleanFeatures
from transferkit.training.head_phase import (
    FeatureCache,
    cached_features,
    fit_head_phase,
    head_graph,
    standardise_head,
)
from transferkit.training.lr_find import LRFindResult, range_test
from transferkit.training.model import Classifier
from transferkit.training.network_phase import TrainingStream, fit_network_phase, training_graph
from transferkit.training.optimizers import compile_classifier, phase_optimizer
from transferkit.training.progress import FitHooks
from transferkit.training.timing import Stopwatch
from transferkit.training.trainable import block_lr_multipliers, set_trainable


@dataclass
class TrainState:
    """Progress of a run, persisted in ``state.json`` after every finished phase."""

    completed_phases: int = 0
    epochs_done: int = 0
    phase_epochs: list[int] = field(default_factory=list)
    augmentation: dict | None = None  # the augmentation check (training.augment_check), once made
    # Per phase, the epoch (1-based within the phase) whose weights it ended with when early
    # stopping restored earlier ones: 0 = the fitted start no epoch beat; None = its last epoch.
    kept_epochs: list[int | None] = field(default_factory=list)
    # The run's seconds when this was saved (selection and trials included): with the backups',
    # what a resume reports as the time before its stop. Not compared: two runs that train alike
    # take different times.
    seconds: float = field(default=0.0, compare=False)

    @classmethod
    def load(cls, run_dir: Path) -> TrainState:
        path = run_dir / "state.json"
        return cls(**json.loads(path.read_text(encoding="utf-8"))) if path.exists() else cls()

    def save(self, run_dir: Path) -> None:
        write_json(run_dir / "state.json", self.__dict__)


def seconds_saved(run_dir: Path) -> float:
    """The seconds a stopped run in ``run_dir`` had taken up to its last saved progress: a finished
    phase (``state.json``) or an epoch's backup, whichever is later; 0.0 where it saved none (a
    stop during selection, or a run from before transferkit recorded them). The epoch in progress at
    the stop, and whatever ran after the last save, are not counted: the resume does them again."""
    backups = (Path(run_dir) / "backup").glob(f"phase*/{AtomicBackupAndRestore.STATE_FILE}")
    saved = [AtomicBackupAndRestore.saved_seconds(path.parent) for path in backups]
    return max([TrainState.load(Path(run_dir)).seconds, *saved])


def run_augmentation(recipe: Recipe, multi_worker: bool = False) -> RandomAffine | None:
    """The augmentation a run of ``recipe`` starts with (None where ``[augment]`` changes nothing).

    Its passes apply the recipe's ``[augment]``, less its pixel noise where the augmentation check
    will measure the warps (the noise then stands in for warps it drops:
    :func:`~transferkit.training.augment.noise_only`). Noise in the check's augmented passes would
    also set the standardisation both its heads train with, and move its verdict: on matplotlib
    typefaces at 224 px it kept warps it had dropped without, and the truncation scored 0.750
    instead of 0.784 on the test split.
    """
    config = recipe.augment
    if is_identity(config):
        return None
    checked = config.measure and any(on_cached_features(phase, multi_worker) for phase in recipe.phases)
    warps = dataclasses.replace(config, noise=0.0)
    return build_augmentation(warps if checked and not is_identity(warps) else config, recipe.seed)


def on_cached_features(phase: Phase, multi_worker: bool = False) -> bool:
    """Whether ``phase`` trains on cached features: a head phase, on one worker."""
    return phase.train == "head" and not multi_worker


class Trainer:
    """Trains ``classifier`` through ``recipe.phases``, writing progress into ``run_dir``.

    The datasets yield batches of ``(uint8 or float32 pixels, int labels)``; ``steps_per_epoch``
    and ``validation_steps`` are their numbers of batches.

    Under distribution (:mod:`transferkit.training.distribute`) the datasets' batches are global,
    ``replicas`` times the recipe's ``batch_size``, and every learning rate is scaled by
    ``replicas``; ``recipe.toml`` keeps the one-replica values. With ``multi_worker`` head phases
    train through the frozen base instead of on cached features (each worker would need the
    features of its own shard), and the training graph is a :class:`MultiWorkerModel`.

    ``clean_features`` (from a :class:`~transferkit.training.feature_bank.FeatureBank`) are the
    classifier extractor's un-augmented features of ``ordered_train_data`` and ``val_data``, already
    computed: head phases before any phase that trains the base use them instead of passing those
    images through the base again.
    """

    def __init__(
        self,
        classifier: Classifier,
        spec: BackboneSpec,
        recipe: Recipe,
        train_data: tf.data.Dataset,
        val_data: tf.data.Dataset,
        ordered_train_data: tf.data.Dataset,
        run_dir: Path,
        *,
        num_classes: int,
        steps_per_epoch: int,
        validation_steps: int,
        train_labels: Sequence[int] | None = None,
        verbose: int = 1,
        hooks: FitHooks | None = None,
        replicas: int = 1,
        multi_worker: bool = False,
        stopwatch: Stopwatch | None = None,
        clean_features: CleanFeatures | None = None,
        cache: CacheBudget | None = None,
    ):
        self.classifier, self.spec, self.recipe = classifier, spec, recipe
        # Shuffled batches for fitting; the same images in a fixed order for feature caching.
        self.train_data, self.val_data, self.ordered_train_data = train_data, val_data, ordered_train_data
        self.run_dir, self.num_classes, self.verbose = Path(run_dir), num_classes, verbose
        self.steps_per_epoch, self.validation_steps = max(1, steps_per_epoch), max(1, validation_steps)
        self.replicas, self.multi_worker = replicas, multi_worker
        self.augment = run_augmentation(recipe, multi_worker)
        self.history = read_history(self.run_dir / "history.csv")
        self.train_labels = train_labels  # for class weights; read from the data when not given
        self.hooks = hooks or FitHooks()  # the app's callbacks, its progress listener, the bars
        self.stopwatch = stopwatch or Stopwatch()  # each phase's feature caching and training, timed
        self.clean_features = clean_features
        self.cache = cache  # the run's cache budget: the held-out splits' decoded images claim from it too
        self.batch_size = recipe.data.batch_size * replicas  # global: what the datasets yield
        # What head phases train on (cache: memory or np.memmap; None: gathered in memory) ...
        self.features = FeatureCache(
            classifier.extractor,
            ordered_train_data,
            val_data,
            batch_size=self.batch_size,
            steps_per_epoch=self.steps_per_epoch,
            validation_steps=self.validation_steps,
            clean_features=clean_features,
            cache=cache,
            stopwatch=self.stopwatch,
            verbose=verbose,
            augment=self.augment,
            without_warps=None if self.augment is None else noise_only(recipe.augment, recipe.seed),
            base_trains=any(phase.train != "head" for phase in recipe.phases),
        )
        # ... and what the phases that fit the whole graph do.
        side = classifier.model.input_shape[1]
        self.stream = TrainingStream(
            train_data, self.steps_per_epoch, recipe.augment, num_classes, recipe.seed, side
        )
        self._training_model: keras.Model | None = None
        self._head_model: keras.Model | None = None
        self.state = TrainState()  # run() reads the saved one
        self._kept_epoch: int | None = None  # set by _fit: see TrainState.kept_epochs

    def run(self, until: int | None = None) -> list[dict]:
        """Train every phase not finished yet (before phase ``until`` only, if given); returns the history.

        A phase whose learning rate is ``"auto"`` first runs the range test; the rate it finds
        replaces ``"auto"`` in ``self.recipe`` and in the run folder's ``recipe.toml``.
        """
        state = self.state = TrainState.load(self.run_dir)
        if state.augmentation is not None and not state.augmentation["use_augmentation"]:
            # measured earlier in this run: augmentation did not help; its pixel noise stays
            self.augment = self.features.without_warps
        if state.completed_phases:
            checkpoint = self._checkpoint(state.completed_phases - 1)
            try:
                self.classifier.model.load_weights(checkpoint)
            except ValueError as error:  # Keras: "A total of N objects could not be loaded ..."
                raise saved_state_error(checkpoint, error) from error
        if state.completed_phases == 0 and not self._on_cached_features(self.recipe.phases[0]):
            self._say("Measuring feature statistics for the head")  # a head phase does this on its own
            standardise_head(self.classifier.head, self.features.clean("train", pretrained=False)[0])
        for index, phase in enumerate(self.recipe.phases[:until]):
            if index < state.completed_phases:
                shutil.rmtree(self._backup_dir(index), ignore_errors=True)  # killed right after state.json
                continue
            self._say(f"Phase {index + 1}/{len(self.recipe.phases)} '{phase.name}': train {phase.train}")
            set_trainable(self.classifier, self.spec, phase)
            try:
                with self.stopwatch.stage(f"phase {index + 1}"):
                    epochs_run = self._run_phase(index, phase, state.epochs_done)
            except tf.errors.ResourceExhaustedError:  # in feature caching or in fit
                size = self.recipe.data.batch_size
                raise TransferkitError(
                    f"Out of memory in phase '{phase.name}' at batch size {size}. "
                    f"Try {setting('batch_size', max(1, size // 2))}; finished epochs are kept (resume the "
                    "run to go on)."
                ) from None
            with atomic_path(self._checkpoint(index)) as tmp:
                self.classifier.model.save_weights(tmp)
            state.completed_phases, state.epochs_done = index + 1, state.epochs_done + epochs_run
            state.phase_epochs.append(epochs_run)
            state.kept_epochs += [None] * (index - len(state.kept_epochs)) + [self._kept_epoch]
            if self._kept_epoch is not None:  # Keras' "Restoring model weights" line, which fit hides
                kept = f"epoch {self._kept_epoch} of {epochs_run}" if self._kept_epoch else "its fitted start"
                self._say(f"Phase '{phase.name}' kept {kept}: the lowest validation loss")
            state.seconds = self.stopwatch.run_seconds()
            state.save(self.run_dir)
            shutil.rmtree(self._backup_dir(index), ignore_errors=True)  # only now: the phase is safe
        with contextlib.suppress(OSError):  # the backups' folder, once every phase's is gone
            (self.run_dir / "backup").rmdir()
        return self.history

    def find_learning_rate(self, index: int, **sweep) -> LRFindResult:
        """Train the phases before ``index``, then run the range test for phase ``index``.

        Args:
            index: the phase (0-based) whose trainable part the sweep trains.
            **sweep: ``start``, ``end``, ``steps`` of :func:`transferkit.training.lr_find.range_test`.
        """
        self.run(until=index)
        phase = self.recipe.phases[index]
        set_trainable(self.classifier, self.spec, phase)
        if self._on_cached_features(phase):
            train, _ = cached_features(self, index, phase)
            return self._sweep(self._head_graph(), phase, train.cycle(), len(train), None, **sweep)
        batches = iter(self.stream.batches(phase, self.state.epochs_done))
        return self._sweep(self._training_graph(), phase, batches, self.steps_per_epoch, None, **sweep)

    def _sweep(self, model, phase, batches, steps_per_epoch, labels, **sweep) -> LRFindResult:
        self._say(f"Learning-rate range test for phase '{phase.name}'")
        self._compile(model, phase, steps_per_epoch, learning_rate=sweep.get("start", 1e-7), constant=True)
        return range_test(model, batches, class_weight=self._class_weight(labels), **sweep)

    def _resolve_rate(self, index, phase, model, batches, steps_per_epoch, labels=None) -> Phase:
        """``phase`` with an ``"auto"`` learning rate replaced by the range test's suggestion."""
        if phase.learning_rate != AUTO_LEARNING_RATE:
            return phase
        result = self._sweep(model, phase, batches, steps_per_epoch, labels)
        write_json(self.run_dir / "lr_find" / f"phase{index}.json", result.to_dict())
        # Measured at the global batch; kept as the one-replica rate that _compile scales back up.
        resolved = dataclasses.replace(phase, learning_rate=result.suggestion / self.replicas)
        phases = list(self.recipe.phases)
        phases[index] = resolved
        self.recipe = dataclasses.replace(self.recipe, phases=tuple(phases))
        write_text(self.run_dir / "recipe.toml", dumps(self.recipe))  # a resume uses the number
        self._say(f"Phase '{phase.name}': learning rate {result.suggestion:.3g} (range test)")
        return resolved

    def _class_weight(self, labels: np.ndarray | None) -> dict[int, float] | None:
        mode = self.recipe.data.class_weight
        if mode == "none":
            return None
        if self.train_labels is not None:
            labels = self.train_labels
        elif labels is None:  # read the labels once from the data (decodes the images)
            self.train_labels = labels = np.concatenate([y.numpy() for _, y in self.ordered_train_data])
        return class_weights(labels, self.num_classes, mode)

    def _compile(
        self,
        model,
        phase: Phase,
        steps_per_epoch: int,
        *,
        learning_rate=None,
        constant=False,
        steps_per_execution: int = 1,
    ) -> None:
        optimizer = phase_optimizer(
            phase,
            learning_rate=phase.learning_rate * self.replicas if learning_rate is None else learning_rate,
            steps_per_epoch=steps_per_epoch,
            multipliers=block_lr_multipliers(self.classifier, self.spec, phase),
            constant=constant,
        )
        smoothing, one_hot = self.recipe.head.label_smoothing, self.stream.mixes(phase)
        compile_classifier(
            model,
            optimizer,
            self.num_classes,
            smoothing,
            one_hot=one_hot,
            steps_per_execution=steps_per_execution,
        )

    def _checkpoint(self, index: int) -> Path:
        return self.run_dir / "checkpoints" / f"phase{index}.weights.h5"

    def _backup_dir(self, index: int) -> Path:
        return self.run_dir / "backup" / f"phase{index}"

    def _say(self, message: str) -> None:
        if self.verbose:
            print(message, flush=True)

    def _callbacks(self, index: int, phase: Phase) -> tuple[list[keras.callbacks.Callback], HistoryWriter]:
        writer = HistoryWriter(self.run_dir / "history.csv", phase.name, self.history)
        backup = self._backup_dir(index)
        # At each epoch end, in this order: the history row, early stopping's verdict, then the
        # backup (weights, optimizer and early stopping's progress in one file), so an epoch the
        # backup counts as done is never missing from the history.
        callbacks: list[keras.callbacks.Callback] = [Reseed(self.recipe.seed), writer]
        stopping = None
        if phase.patience:
            stopping = ResumableEarlyStopping(
                monitor="val_loss", patience=phase.patience, restore_best_weights=True
            )
            callbacks.append(stopping)
        callbacks += [
            AtomicBackupAndRestore(str(backup), stopping, clock=self.stopwatch.run_seconds),
            EpochTensorBoard(str(self.run_dir / "logs")),
        ]
        return callbacks, writer

    def _fit(
        self, model, data, index, phase, initial_epoch, extra_callbacks=(), start_loss=None, **kwargs
    ) -> int:
        """``model.fit`` for ``phase``; ``start_loss``: the validation loss of a fitted start, which
        early stopping keeps if no epoch beats it."""
        callbacks, writer = self._callbacks(index, phase)
        stopping = next((c for c in callbacks if isinstance(c, ResumableEarlyStopping)), None)
        if stopping is not None:
            stopping.start_loss = start_loss
        with self.stopwatch.stage("training"):
            history = model.fit(
                data,
                epochs=initial_epoch + phase.epochs,
                initial_epoch=initial_epoch,
                callbacks=[*extra_callbacks, *callbacks, *self._hook_callbacks(index, phase, initial_epoch)],
                verbose=self.hooks.keras_verbose(self.verbose),
                shuffle=False,  # the datasets shuffle themselves, with the run's seed
                **kwargs,
            )
        if writer.bad_loss_epoch is not None:
            raise TransferkitError(
                f"Loss became NaN/inf at epoch {writer.bad_loss_epoch} of phase '{phase.name}'. "
                "The learning rate "
                f"({phase.learning_rate:g}) is the likely cause: lower it in the recipe (e.g. to "
                f"{phase.learning_rate / 10:g}) and check the images are valid."
            )
        final_epoch = history.epoch[-1] + 1 if history.epoch else initial_epoch + phase.epochs
        self._kept_epoch = None
        if stopping is not None and stopping.best_weights is not None:  # early stopping put them back
            kept = max(stopping.best_epoch + 1 - initial_epoch, 0)  # the fitted start (epoch -1): 0
            self._kept_epoch = kept if kept != final_epoch - initial_epoch else None
        return final_epoch - initial_epoch

    def _on_cached_features(self, phase: Phase) -> bool:
        return on_cached_features(phase, self.multi_worker)

    def _hook_callbacks(self, index: int, phase: Phase, initial_epoch: int) -> list:
        phases = len(self.recipe.phases)
        return self.hooks.phase_callbacks(index, phase.name, phase.epochs, phases, initial_epoch)

    def _run_phase(self, index: int, phase: Phase, initial_epoch: int) -> int:
        if self._on_cached_features(phase):
            return fit_head_phase(self, index, phase, initial_epoch)
        return fit_network_phase(self, index, phase, initial_epoch)

    def _backed_up_epoch(self, index: int, default: int) -> int:
        """The epoch counter in the phase's backup (what the backup callback will resume from)."""
        saved = AtomicBackupAndRestore.saved_epoch(self._backup_dir(index))
        return default if saved is None else saved

    def _training_graph(self) -> keras.Model:
        """What phases on images compile and fit: built once, re-compiled every phase."""
        if self._training_model is None:
            side, phases = self.stream.image_size, self.recipe.phases
            any_size = any(low_res_epochs(phase, side) for phase in phases if phase.train != "head")
            self._training_model = training_graph(
                self.classifier.training_model(), self.augment, self.multi_worker, any_size=any_size
            )
        return self._training_model

    def _head_graph(self) -> keras.Model:
        """What head phases on cached features compile and fit: built once, re-compiled every phase."""
        if self._head_model is None:
            self._head_model = head_graph(self.classifier.head)
        return self._head_model

    def cached_validation(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(probabilities, labels)`` of the validation images from their cached features, where the
        base never trains (so what :meth:`predictor` would compute from the images again); None
        where it trains or nothing is cached (a run resumed after its head phases)."""
        cached = None if self.features.base_trains else self.features.pretrained_validation()
        if cached is None:
            return None
        features, labels = cached
        head = self.classifier.head
        return np.asarray(head(np.asarray(features, np.float32), training=False), np.float32), labels

    def predictor(self):
        """``images -> probabilities`` of the classifier through the run's traced clean feature step
        and the head: what ``model.predict_on_batch`` computes, without tracing the whole model again
        (~1 s of CPU for MobileNetV2 at 128 px) to evaluate it once trained."""
        step, head = self.features.clean_step(), self.classifier.head
        return lambda images: np.asarray(head(step(tf.cast(images, tf.float32)), training=False))
