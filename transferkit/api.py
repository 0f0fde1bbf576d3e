"""The Python API: ``fit``, ``resume``, ``lr_find`` (and ``predict``, ``evaluate`` from their modules).
The CLI is a thin layer over these; the stages of a fit are in :mod:`transferkit.session`.

Example:
    >>> import transferkit
    >>> run = transferkit.fit(data="./pets", size="small", similar=True)  # doctest: +SKIP
    >>> run.metrics.accuracy, run.run_dir  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import keras

from transferkit import recipes as recipe_io
from transferkit.backbones.registry import get_backbone
from transferkit.backbones.weights import check_weights
from transferkit.console import resume_command
from transferkit.data.cache_budget import spill_folder
from transferkit.data.loading import source_path
from transferkit.data.scan import nfc
from transferkit.errors import TransferkitError, choices_error
from transferkit.evaluation import evaluate  # noqa: F401  (public API)
from transferkit.fileio import require_writable_folder, write_json, write_text
from transferkit.prediction import (
    predict,  # noqa: F401  (public API)
)
from transferkit.recipes import Recipe
from transferkit.reporting import figures, runfolder
from transferkit.runtime.collector import spares_older_objects
from transferkit.runtime.onednn import late_import_note
from transferkit.runtime.tf_logging import tensorflow_warnings_muted
from transferkit.selection.journal import SelectionJournal
from transferkit.selection.quadrants import SIZE_CHOICES, quadrant_for
from transferkit.selection.trials import SELECTION_MODES
from transferkit.session import (
    FitResult,
    load_splits,
    make_trainer,
    planned,
    prepare,
    resume_training,
    say,
    train_and_report,
)
from transferkit.training.averaging import partner_dir
from transferkit.training.device import Device, device_scope, environment, precision_for
from transferkit.training.distribute import (
    check_agreement,
    read_cluster,
    worker_run_dir,
)
from transferkit.training.progress import fit_hooks, resolve_verbose
from transferkit.training.timing import Stopwatch
from transferkit.training.trainer import seconds_saved


def resolve_recipe(
    recipe: str | Path | Recipe | None, size: str, similar: bool | None, **overrides
) -> tuple[Recipe, bool]:
    """The recipe to run, and whether the quadrant still has to be measured.

    An explicit ``recipe`` wins; otherwise ``size`` ("small" | "large" | "auto") and
    ``similar`` (True | False | None = auto) pick a built-in quadrant recipe. When either half
    is auto, a provisional recipe is returned and the selector decides after measuring.
    """
    if size not in SIZE_CHOICES:
        raise choices_error("size", size, SIZE_CHOICES)
    if recipe is not None:
        if isinstance(recipe, Recipe):
            chosen = recipe_io.with_overrides(recipe_io.checked(recipe), **overrides)
        else:
            chosen = recipe_io.with_overrides(recipe_io.load(recipe), source=str(recipe), **overrides)
        measure = False
    else:
        measure = size == "auto" or similar is None
        name = quadrant_for("small" if size == "auto" else size, True if similar is None else similar)
        chosen = recipe_io.with_overrides(recipe_io.load_builtin(name), **overrides)
    # An unknown backbone or weights, or a size the network cannot take, fails here, before the scan.
    spec = get_backbone(chosen.backbone.name)
    spec.check_size(chosen.backbone.image_size or spec.default_size)
    check_weights(chosen.backbone.weights)
    return chosen, measure


def _optional(check):
    return lambda value: value is None or check(value)


def _int_at_least(low: int):
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= low


def _is_path(value) -> bool:
    return isinstance(value, str | os.PathLike)


def _is_positive(value) -> bool:  # a finite number > 0, not a bool
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < math.inf


def _is_fraction(value) -> bool:  # a number in [0, 1), not a bool
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value < 1


# The arguments fit and lr_find share with the CLI's flags, which click types and ranges check:
# key -> (the check, what it must be, an example).
_ARGUMENTS = {
    "data": (_is_path, "a folder (str or os.PathLike) or 'tfds:NAME[:split]'", "data='./pets'"),
    "similar": (_optional(lambda v: isinstance(v, bool)), "True, False or None (measured)", "similar=True"),
    "recipe": (
        _optional(lambda v: _is_path(v) or isinstance(v, Recipe)),
        "None, a recipe file, a built-in recipe's name or a Recipe",
        "recipe='small_similar'",
    ),
    "backbone": (
        _optional(lambda v: isinstance(v, str)),
        "None or a backbone's name (str)",
        "backbone='tiny'",
    ),
    "weights": (
        _optional(lambda v: isinstance(v, str)),
        "None, 'imagenet', 'random' or a weights file's path (str)",
        "weights='imagenet'",
    ),
    "epochs": (_optional(_int_at_least(1)), "None or an int >= 1", "epochs=10"),
    "image_size": (_optional(_int_at_least(8)), "None or an int >= 8 (pixels)", "image_size=224"),
    "batch_size": (_optional(_int_at_least(1)), "None or an int >= 1", "batch_size=32"),
    "cache_memory": (
        _optional(lambda v: isinstance(v, str)),
        "None, 'auto' or a size (str)",
        "cache_memory='2GB'",
    ),
    "seed": (
        _optional(lambda v: _int_at_least(0)(v) and v < 2**32),
        "None or an int in [0, 2**32)",
        "seed=1337",
    ),
    "test_split": (_optional(_is_fraction), "None or a number in [0, 1), 0 = none", "test_split=0.15"),
    "out": (_is_path, "a folder (str or os.PathLike)", "out='runs'"),
    "name": (_optional(lambda v: isinstance(v, str)), "None or a folder name (str)", "name='pets-v2'"),
    "strict": (lambda v: isinstance(v, bool), "True or False", "strict=True"),
    "dry_run": (lambda v: isinstance(v, bool), "True or False", "dry_run=True"),
    "report": (lambda v: isinstance(v, bool), "True or False", "report=False"),
    "steps": (_int_at_least(2), "an int >= 2 (rates tried)", "steps=100"),
    "callbacks": (
        _optional(
            lambda v: isinstance(v, list | tuple) and all(isinstance(c, keras.callbacks.Callback) for c in v)
        ),
        "None or a list of keras.callbacks.Callback",
        "callbacks=[keras.callbacks.TerminateOnNaN()]",
    ),
}


def _check_arguments(function: str, **arguments) -> None:
    """Refuse an argument of the wrong type or out of range with a one-line error, before anything
    is read or written (a float ``epochs`` passed the recipe's range checks and the dry run, then
    failed inside Keras mid-fit, leaving a run folder behind)."""
    for key, value in arguments.items():
        check, wanted, example = _ARGUMENTS[key]
        if not check(value):
            raise TransferkitError(f"{function}: {key} must be {wanted} (got {value!r}); e.g. {example}.")


@tensorflow_warnings_muted
@spares_older_objects
def fit(
    data: str | Path,
    *,
    size: str = "auto",
    similar: bool | None = None,
    recipe: str | Path | Recipe | None = None,
    backbone: str | None = None,
    weights: str | None = None,
    epochs: int | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    cache_memory: str | None = None,
    seed: int | None = None,
    test_split: float | None = None,
    selection: str = "trial",
    out: str | Path = "runs",
    name: str | None = None,
    strict: bool = False,
    dry_run: bool = False,
    report: bool = True,
    precision: str = "auto",
    distribute: str = "auto",
    verbose: int | str = "auto",
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    progress: object | None = None,
) -> FitResult:
    """Train a transfer-learning classifier on a folder of labelled images.

    Args:
        data: a folder of class subfolders (or with train/ val/ [test/] splits, or of images with
            a ``labels.csv``: :mod:`transferkit.data.label_file`), or ``tfds:NAME[:split]``.
        size: "small" | "large" | "auto" (measured from the dataset card).
        similar: True | False | None (auto: measured with the pretrained features).
        recipe: a recipe file or built-in name; overrides size/similar.
        backbone, weights, epochs, image_size, batch_size, seed: override the recipe.
        cache_memory: memory for decoded images and cached features before they spill to files in
            the run folder (removed when the run ends): "auto" or a size such as "2GB"
            (overrides the recipe's ``[data] cache_memory``; :mod:`transferkit.data.cache_budget`).
        test_split: fraction of each class held out for testing when the data has no test split
            (overrides the recipe's ``[data] test_split``, default 0.15; 0 holds out nothing).
        selection: "trial" (when the measured call is close, train the candidates briefly on the
            training and validation splits and keep the winner; recorded in ``selection.json``)
            or "fast" (the measured pick as it is). A dry run never trains trials.
        out: parent folder of run folders.
        name: run folder name (default ``<data>-<recipe>-<timestamp>``; ``<data>-auto-<timestamp>``
            where the recipe is picked).
        strict: a class folder without usable images is an error instead of a warning.
        dry_run: build the model and return the plan without training or writing anything.
        report: draw the figures and write ``report.html``. False writes every number (metrics,
            predictions, interpretation.json) but no picture (1-1.5 s of CPU less on a small run): for runs
            an app repeats; ``transferkit.report(run_dir)`` draws them later. A resume follows it.
        precision: "auto" (mixed_float16 on a GPU, float32 on a CPU), "float32", "mixed_float16"
            or "mixed_bfloat16" (:func:`transferkit.training.device.setup_device`).
        distribute: "auto" | "none" | "mirrored" | "multi-worker" (every process of a
            ``TF_CONFIG`` cluster runs this same call, with the same ``name``); the global batch
            is ``batch_size`` x replicas and learning rates scale with the replicas
            (:mod:`transferkit.training.distribute`, docs/DISTRIBUTED.md).
        verbose: 0 silent, 1 one progress bar per phase, 2 one line per epoch; "auto" (the
            default) 1 on a terminal or in a notebook, else 2 (a log file or a pipe).
        callbacks: the app's own Keras callbacks, added to every phase's ``model.fit``; their
            ``model`` is the phase's training graph, not the classifier (``ModelCheckpoint`` and
            ``BackupAndRestore`` are refused: the run folder's checkpoints do their work). A phase
            that trains the head on cached features runs a whole epoch per call of the train
            function, so batch hooks see one call per epoch there (Keras' ``steps_per_execution``).
        progress: a callable (or an object with ``phase_started`` / ``epoch_ended`` /
            ``finished`` methods) receiving :mod:`transferkit.training.progress` events: each
            phase's ``PhaseStarted``, then one ``EpochEnded`` per epoch, and ``Finished`` last.

    Returns:
        A :class:`FitResult`; on a non-chief worker it has no metrics and no run folder.
    """
    _check_arguments(
        "fit",
        data=data,
        similar=similar,
        recipe=recipe,
        backbone=backbone,
        weights=weights,
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        cache_memory=cache_memory,
        seed=seed,
        test_split=test_split,
        out=out,
        name=name,
        strict=strict,
        dry_run=dry_run,
        report=report,
        callbacks=callbacks,
    )
    test_split = None if test_split is None else float(test_split)  # 0 as the recipe's 0.0
    verbose = resolve_verbose(verbose)
    started = time.perf_counter()
    stopwatch = Stopwatch()  # the run's stage timings: timings.json, and one line at the end
    if selection not in SELECTION_MODES:
        raise choices_error("selection", selection, SELECTION_MODES)
    overrides = dict(
        backbone=backbone,
        weights=weights,
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        test_split=test_split,
        cache_memory=cache_memory,
    )
    chosen, measure = resolve_recipe(recipe, size, similar, seed=seed, **overrides)
    if not dry_run:  # before the scan, not after it
        require_writable_folder(out)
        if name is not None and distribute != "multi-worker":  # there each worker has its part
            runfolder.require_name_free(out, name)
    # Precision, seeds and determinism hold for this call only; the caller's settings come back.
    with device_scope(precision_for(precision, chosen.backbone.weights), chosen.seed, distribute) as device:
        # An absolute folder path: `fit --resume` works from any working directory, and the image
        # paths the run records (predictions.npz) read back from anywhere, resumed or not.
        source = source_path(data)
        with stopwatch.stage("load data"):
            splits = load_splits(source, chosen, strict)
        say(verbose, splits.card.summary())
        if note := late_import_note():
            say(verbose, note)
        # Trials are evaluated with predict_on_batch, which a multi-replica model repeats per replica.
        mode = "fast" if dry_run or device.replicas > 1 or device.cluster else selection
        hooks = fit_hooks(callbacks, progress, verbose)
        if dry_run:
            with device.strategy.scope():
                session = prepare(chosen, splits, measure, size, similar, overrides, verbose, mode, stopwatch)
            return planned(dataclasses.replace(session, hooks=hooks), started)
        # The run folder comes first, so that a stop while the selector measures or the trials
        # train loses nothing: `fit --resume` picks the selection up where it was.
        run_dir = _new_run_dir(out, source, "auto" if measure else chosen.name, name, device)
        say(verbose, f"Run folder: {run_dir} (if interrupted: {resume_command(run_dir)})")
        request = dict(
            measure=measure, size=size, similar=similar, overrides=overrides, selection=mode, report=report
        )
        _start_selecting(run_dir, chosen, splits, source, request, device.precision)
        try:
            with _named_on_interrupt(run_dir):
                return _select_and_train(
                    chosen, splits, source, request, run_dir, device, stopwatch, started, verbose, hooks
                )
        except Exception:
            _remove_if_nothing_done(run_dir)
            raise


@contextlib.contextmanager
def _named_on_interrupt(run_dir: Path):
    """An interrupt (Ctrl-C, SIGTERM) or an OS error (a full disk) leaving the block carries
    ``run_dir``: the command line's message names the folder to resume."""
    try:
        yield
    except (KeyboardInterrupt, OSError) as stop:
        stop.run_dir = run_dir
        raise


def _start_selecting(
    run_dir: Path, recipe: Recipe, splits, source: str, request: dict, precision: str
) -> None:
    """What a resume of a fit stopped before its training needs: the recipe asked for (before
    selection), the data and its split, the precision and how the selection was asked for
    (``request``)."""
    write_text(run_dir / "recipe.toml", recipe_io.dumps(recipe))
    record = {"data": source, "seed": recipe.seed, "precision": precision, **_split_record(splits)}
    runfolder.save_run_info(run_dir, {**record, "status": "selecting", "selection_request": request})


def _remove_if_nothing_done(run_dir: Path) -> None:
    """A fit that failed before it measured, trialled or trained anything (a missing weights
    file, a bad cut point) leaves no folder behind: there is nothing in it to resume."""
    if runfolder.read_run_info(run_dir).get("status") != "selecting":
        return
    if {p.name for p in run_dir.iterdir()} <= {"recipe.toml", "run.json"}:
        shutil.rmtree(run_dir, ignore_errors=True)


def _split_record(splits) -> dict:
    """run.json's record of the data a resume must find again."""
    return {
        "class_names": list(splits.class_names),
        "test_split": splits.holdout.to_dict(),
        "white_level": splits.card.white_level,  # predict and evaluate decode as training did
    }


def _select_and_train(
    recipe, splits, source, request, run_dir, device, stopwatch, started, verbose, hooks, resumed=False
):
    """Measure and trial as ``request`` asks (what ``run_dir`` records of it is not done again),
    then train and report: a fit from its run folder on (``resumed``: a resume of one stopped while
    selecting)."""
    journal = SelectionJournal(run_dir)
    with device.strategy.scope():
        session = prepare(
            recipe,
            splits,
            request["measure"],
            request["size"],
            request["similar"],
            request["overrides"],
            verbose,
            request["selection"],
            stopwatch,
            journal,
        )
    session = dataclasses.replace(session, hooks=hooks)
    if device.cluster is not None:
        check_agreement(device.strategy, recipe_io.dumps(session.recipe), "recipe")
    info = {
        "data": source,
        "backbone": session.spec.name,
        "weights": session.weights_source,
        "seed": session.recipe.seed,
        "device": device.describe(),
        "precision": device.precision,  # what a resume trains in (its optimizer state depends on it)
        "environment": environment(),
        **_split_record(splits),
        "distribution": _distribution_record(device, session.recipe),
        "report": request.get("report", True),  # figures and report.html (a resume follows it)
    }
    with spill_folder(run_dir):  # caches over the --cache-memory budget: gone when the run ends
        return train_and_report(session, splits, run_dir, info, device, started, verbose, resumed)


def _new_run_dir(out, data: str, recipe_name: str, name: str | None, device: Device) -> Path:
    """A fresh run folder; under multi-worker, ``out/name`` on every worker (this one's part of it)."""
    if device.cluster is None:
        return runfolder.new_run_dir(out, data, recipe_name, name)
    if not name:
        raise TransferkitError(
            "--distribute multi-worker needs --name (fit(name=...)): every worker must agree on "
            "the run folder, and a restarted job resumes it with --resume OUT/NAME."
        )
    run_dir = Path(out) / runfolder.safe_name(name)
    own = worker_run_dir(run_dir, device.cluster)
    if (own / "run.json").exists():
        raise TransferkitError(
            f"The run folder {str(run_dir)!r} already holds a run. Continue it with "
            f"`{resume_command(run_dir, distribute='multi-worker')}` on every worker, "
            "or pick a new --name."
        )
    own.mkdir(parents=True, exist_ok=True)
    return own


def _distribution_record(device: Device, recipe: Recipe) -> dict:
    """run.json's record of how training was spread: replicas, global batch, learning-rate scale."""
    return {
        "strategy": device.distribution,
        "replicas": device.replicas,
        "workers": device.cluster.workers if device.cluster else 1,
        "per_replica_batch": recipe.data.batch_size,
        "global_batch": recipe.data.batch_size * device.replicas,
        "learning_rate_scale": device.replicas,  # linear scaling rule
        "features_cached": device.distribution != "multi-worker",
    }


@tensorflow_warnings_muted
@spares_older_objects
def resume(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    precision: str = "auto",
    distribute: str = "auto",
    dry_run: bool = False,
    verbose: int | str = "auto",
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    progress: object | None = None,
) -> FitResult:
    """Continue an interrupted ``fit`` from its last finished epoch, with the run's own recipe and data.

    Weights, optimizer state, learning-rate schedule position, phase and epoch counter are
    restored; the run ends with the same number of epochs as an uninterrupted one.

    Args:
        run_dir: the run folder ``fit`` printed.
        data: where the run's images are now, when they moved since it started (the same
            classes and held-out test split are checked); None: where they were.
        precision: "auto" (the default) resumes in the precision the run started in
            (``run.json``); naming another is an error (:func:`_resumed_precision`).
        distribute: as for :func:`fit`; under multi-worker, every worker resumes ``run_dir`` (a
            non-chief from its own ``workertemp_*`` folder inside it, which it wrote before the stop).
        dry_run: rebuild the model and return the remaining plan without training or writing.
        verbose: 0 silent, 1 one progress bar per phase, 2 one line per epoch; "auto" (the
            default) 1 on a terminal or in a notebook, else 2 (a log file or a pipe).
        callbacks, progress: as for :func:`fit`.
    """
    verbose = resolve_verbose(verbose)
    started = time.perf_counter()
    cluster = read_cluster() if distribute == "multi-worker" else None  # reads TF_CONFIG only
    run_dir = worker_run_dir(Path(run_dir), cluster)
    # The time the run took before its stop, as far as it saved progress (its partner's too).
    stopwatch = Stopwatch(before=max(seconds_saved(run_dir), seconds_saved(partner_dir(run_dir))))
    info = runfolder.read_run_info(run_dir)
    if info.get("status") == "finished":
        raise TransferkitError(f"The run in {str(run_dir)!r} already finished; nothing to resume.")
    if data is not None:  # the images moved: the split checks below still hold them to the run's
        info = {**info, "data": source_path(data)}
    elif not str(info["data"]).startswith("tfds:") and not Path(info["data"]).exists():
        raise TransferkitError(
            f"The run's data folder {info['data']!r} is gone. If it moved, give its new place: "
            f"{resume_command(run_dir, data='NEW_FOLDER')}"
        )
    recipe = recipe_io.load(run_dir / "recipe.toml")
    if "test_split" not in info:  # started before fit held out a test split: keep the run's own split
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, test_split=0.0))
        say(verbose, "This run started before transferkit held out a test split; it resumes without one.")

    precision = _resumed_precision(precision, info, recipe)
    with device_scope(precision, recipe.seed, distribute) as device:
        with stopwatch.stage("load data"):
            splits = load_splits(info["data"], recipe)
            if info.get("test_split", {}).get("origin") == "none" and splits.holdout.origin == "held_out":
                # Started with none held out, before small classes left the others their test images
                # (until 2026-12-08 none was, where any class had under 3): its images stay as they were.
                recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, test_split=0.0))
                splits = load_splits(info["data"], recipe)
        if list(map(nfc, splits.class_names)) != list(map(nfc, info["class_names"])):
            raise TransferkitError(
                f"The classes in {info['data']} changed since the run started; cannot resume."
            )
        recorded = info.get("test_split", {}).get("sha256")
        if recorded is not None and recorded != splits.holdout.sha256:
            raise TransferkitError(
                f"The held-out test split of {info['data']} is not the one the run started with "
                "(files were added or removed, or an older transferkit split it); cannot resume. Start a "
                "new fit."
            )
        request = info.get("selection_request") if info.get("status") == "selecting" else None
        hooks = fit_hooks(callbacks, progress, verbose)
        if dry_run:
            with device.strategy.scope():
                if request is not None:  # the plan the selection would give, nothing measured written
                    args = (request["measure"], request["size"], request["similar"], request["overrides"])
                    session = prepare(recipe, splits, *args, verbose, "fast", stopwatch)
                else:
                    session = prepare(recipe, splits, False, "auto", None, {}, verbose, stopwatch=stopwatch)
            return planned(dataclasses.replace(session, hooks=hooks), started)
        say(verbose, f"Resuming {run_dir}")
        here = environment()
        if info.get("environment", here) != here:  # the start's stays; where it went on is added
            info = {**info, "resumed_environment": here}
        if data is not None:  # the same images, checked: a later resume finds them there too
            runfolder.save_run_info(run_dir, info)
        for leftover in run_dir.rglob(".*.tmp*"):  # half-written temp files of a process killed mid-write
            leftover.unlink(missing_ok=True)
        if request is not None:  # stopped while selecting: the selection goes on from its journal
            if device.replicas > 1 or device.cluster is not None:
                request = {**request, "selection": "fast"}
            with _named_on_interrupt(run_dir):
                return _select_and_train(
                    recipe,
                    splits,
                    info["data"],
                    request,
                    run_dir,
                    device,
                    stopwatch,
                    started,
                    verbose,
                    hooks,
                    True,
                )
        with device.strategy.scope():
            session = prepare(recipe, splits, False, "auto", None, {}, verbose, stopwatch=stopwatch)
        session = dataclasses.replace(session, hooks=hooks)
        with spill_folder(run_dir), _named_on_interrupt(run_dir):  # spill: gone when the run ends
            return resume_training(session, splits, run_dir, info, device, started, verbose, resumed=True)


def _resumed_precision(asked: str, info: dict, recipe: Recipe) -> str:
    """The precision a resumed run trains in: the one it started in (``run.json``), so that it goes
    on as it would have without the stop. Its backup holds the optimizer's state, and under
    ``mixed_float16`` that includes the loss scaling's; a GPU run resumed on a CPU goes on in
    ``mixed_float16`` there. Asking for another is an error; runs from before the precision was
    recorded on its own read it from the device's description, else take ``asked``."""
    started = info.get("precision") or _described_precision(str(info.get("device", "")))
    if started is None:
        return precision_for(asked, recipe.backbone.weights)
    if asked not in ("auto", started):
        raise TransferkitError(
            f"This run trains in {started} precision (run.json); it resumes in it, since its saved "
            f"optimizer state belongs to it. Leave out --precision {asked}."
        )
    return started


def _described_precision(device: str) -> str | None:
    """The precision named in :meth:`~transferkit.training.device.Device.describe`'s text."""
    named = (name for name in recipe_io.PRECISIONS if name != "auto" and f" {name} precision" in device)
    return next(named, None)


@tensorflow_warnings_muted
def lr_find(
    data: str | Path,
    *,
    recipe: str | Path | Recipe | None = None,
    phase: int | str | None = None,
    size: str = "auto",
    similar: bool | None = None,
    backbone: str | None = None,
    weights: str | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    start: float = 1e-7,
    end: float = 1.0,
    steps: int = 100,
    out: str | Path = "lr_find",
    precision: str = "auto",
    verbose: int = 1,
):
    """Learning-rate range test for one phase of a recipe; writes ``lr_find.json`` and ``lr_find.png``.

    The phases before ``phase`` train first (in a temporary folder), so the sweep starts from the
    weights they leave; the weights are restored after it. A head phase's head is swept from its
    initialisation, not from the logistic-regression start (``[head] init = "logistic"``) that the
    phase itself fits first: its loss starts high, as in the usual range test.

    Args:
        data, recipe, size, similar, backbone, weights, image_size, batch_size, seed: as for :func:`fit`.
        phase: the phase's name or 1-based number (default: the last phase).
        start, end: the swept range of learning rates.
        steps: optimizer steps in the sweep (one rate each); it stops early when the loss diverges.
        out: folder for ``lr_find.json`` and ``lr_find.png``.
        precision: "auto" (mixed_float16 on a GPU, float32 on a CPU), "float32", "mixed_float16"
            or "mixed_bfloat16" (:func:`transferkit.training.device.setup_device`).
        verbose: 0 silent, 1 progress.

    Returns:
        A :class:`transferkit.training.lr_find.LRFindResult`; ``.suggestion`` is the suggested rate.
    """

    _check_arguments(
        "lr_find",
        data=data,
        recipe=recipe,
        similar=similar,
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        batch_size=batch_size,
        seed=seed,
        out=out,
        steps=steps,
    )
    if not (_is_positive(start) and _is_positive(end) and start < end):
        raise TransferkitError(
            f"lr_find: start and end must be numbers with 0 < start < end (got start={start!r}, "
            f"end={end!r}); e.g. start=1e-7, end=1.0."
        )
    overrides = dict(backbone=backbone, weights=weights, image_size=image_size, batch_size=batch_size)
    chosen, measure = resolve_recipe(recipe, size, similar, seed=seed, **overrides)
    out = Path(out)
    precision = precision_for(precision, chosen.backbone.weights)
    with device_scope(precision, chosen.seed) as device, tempfile.TemporaryDirectory() as scratch:
        splits = load_splits(data, chosen)  # the held-out test split stays out of the sweep too
        with device.strategy.scope():
            session = prepare(chosen, splits, measure, size, similar, overrides, verbose)
            session = dataclasses.replace(session, hooks=fit_hooks(None, None, verbose))  # fit's bars
            index = _phase_index(session.recipe, phase)
            trainer = make_trainer(session, splits, Path(scratch), verbose)
            result = trainer.find_learning_rate(index, start=start, end=end, steps=steps)
    name = session.recipe.phases[index].name
    write_json(out / "lr_find.json", {"recipe": session.recipe.name, "phase": name, **result.to_dict()})
    title = f"learning-rate range test: {session.recipe.name}, phase '{name}'"
    figures.plot_lr_find(result, out / "lr_find.png", title=title)
    say(
        verbose,
        f"Suggested learning rate for phase '{name}': {result.suggestion:.3g} ({out / 'lr_find.png'})",
    )
    return result


def _phase_index(recipe: Recipe, phase: int | str | None) -> int:
    """0-based index of ``phase`` (a name or a 1-based number; None: the last phase)."""
    names = [p.name for p in recipe.phases]
    if phase is None:
        return len(names) - 1
    if isinstance(phase, int) or str(phase).isdigit():
        if 1 <= int(phase) <= len(names):
            return int(phase) - 1
    elif phase in names:
        return names.index(phase)
    raise choices_error("phase", phase, [*names, *map(str, range(1, len(names) + 1))])
