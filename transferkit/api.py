"""The Python API: ``fit``, ``evaluate``, ``predict``. The CLI is a thin layer over these.

Example:
    >>> import transferkit
    >>> run = transferkit.fit(data="./pets", size="small", similar=True)  # doctest: +SKIP
    >>> run.metrics.accuracy, run.run_dir  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from transferkit import recipes as recipe_io
from transferkit.backbones.registry import BackboneSpec, get_backbone
from transferkit.backbones.weights import build_base
from transferkit.data.loading import DataSplits, ImageSet, load_data, load_images, make_dataset
from transferkit.errors import TransferkitError, choices_error
from transferkit.fileio import write_json, write_text
from transferkit.prediction import DEFAULT_TOP_K, ranked, tta_model, write_contact_sheet
from transferkit.recipes import Recipe
from transferkit.reporting import figures, runfolder
from transferkit.reporting.diagnostics import evaluate_held_out, load_predictions
from transferkit.reporting.html import write_html_report
from transferkit.reporting.interpretation import write_interpretation
from transferkit.reporting.metrics import Metrics, evaluate_model
from transferkit.selection.decision import Selection
from transferkit.selection.measure import measure_quadrant, size_figures
from transferkit.selection.quadrants import SIZE_CHOICES, quadrant_for
from transferkit.selection.trials import SELECTION_MODES, candidates, successive_halving, with_trials
from transferkit.tf_logging import tensorflow_warnings_muted
from transferkit.training.device import Device, device_scope
from transferkit.training.distribute import (
    check_agreement,
    local_copy,
    peer_failures,
    read_cluster,
    remove_worker_dir,
    shard_by_example,
    weights_sha256,
    worker_run_dir,
)
from transferkit.training.model import build_classifier, truncate
from transferkit.training.progress import FitHooks, fit_hooks
from transferkit.training.trainable import plan_phase
from transferkit.training.trainer import Trainer


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` returns: the run folder, the trained model, its metrics and the plan it ran.

    ``metrics`` are measured on the held-out test split when there is one (``headline == "test"``),
    otherwise on the validation split that early stopping saw (``headline == "validation"``);
    ``validation_metrics`` are always the validation split's.
    """

    run_dir: Path | None
    model: keras.Model
    metrics: Metrics | None
    recipe: Recipe
    selection: object | None
    plan: tuple
    seconds: float
    weights_source: str
    validation_metrics: Metrics | None = None
    headline: str = "validation"

    def summary(self) -> str:
        """One line, the headline split first with its 95% interval, e.g.
        ``test accuracy 0.912 (95% CI 0.870-0.940, n=120) | validation 0.930 | 42 s | runs/x``."""
        m = self.metrics
        if m is None:
            return f"no metrics here (a non-chief worker: see the chief's run folder) | {self.seconds:.0f} s"
        low, high = m.accuracy_interval
        top5 = f", top-5 {m.top5_accuracy:.3f}" if m.top5_accuracy is not None else ""
        interval = f"95% CI {low:.3f}-{high:.3f}, n={m.num_samples}"
        parts = [f"{self.headline} accuracy {m.accuracy:.3f} ({interval}){top5}"]
        if self.headline == "test" and self.validation_metrics is not None:
            parts.append(f"validation {self.validation_metrics.accuracy:.3f}")
        else:
            parts.append("no test split: early stopping saw these images")
        return " | ".join([*parts, f"{self.seconds:.0f} s", str(self.run_dir)])


def _as_float(data: tf.data.Dataset) -> tf.data.Dataset:
    return data.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


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
        chosen = recipe if isinstance(recipe, Recipe) else recipe_io.load(recipe)
        return recipe_io.with_overrides(chosen, **overrides), False
    measure = size == "auto" or similar is None
    name = quadrant_for("small" if size == "auto" else size, True if similar is None else similar)
    return recipe_io.with_overrides(recipe_io.load_builtin(name), **overrides), measure


def _image_size(recipe: Recipe, spec: BackboneSpec) -> int:
    return recipe.backbone.image_size or spec.default_size


@tensorflow_warnings_muted
def fit(
    data: str,
    *,
    size: str = "auto",
    similar: bool | None = None,
    recipe: str | Path | Recipe | None = None,
    backbone: str | None = None,
    weights: str | None = None,
    epochs: int | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    test_split: float | None = None,
    selection: str = "trial",
    out: str | Path = "runs",
    name: str | None = None,
    strict: bool = False,
    dry_run: bool = False,
    precision: str = "auto",
    distribute: str = "auto",
    verbose: int = 1,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    progress: object | None = None,
) -> FitResult:
    """Train a transfer-learning classifier on a folder of labelled images.

    Args:
        data: a folder of class subfolders (or with train/ val/ [test/] splits), or
            ``tfds:NAME[:split]``.
        size: "small" | "large" | "auto" (measured from the dataset card).
        similar: True | False | None (auto: measured with the pretrained features).
        recipe: a recipe file or built-in name; overrides size/similar.
        backbone, weights, epochs, image_size, batch_size, seed: override the recipe.
        test_split: fraction of each class held out for testing when the data has no test split
            (overrides the recipe's ``[data] test_split``, default 0.15; 0 holds out nothing).
        selection: "trial" (when the measured call is close, train the candidates briefly on the
            training and validation splits and keep the winner; recorded in ``selection.json``)
            or "fast" (the measured pick as it is). A dry run never trains trials.
        out: parent folder of run folders.
        name: run folder name (default ``<data>-<recipe>-<timestamp>``).
        strict: a class folder without usable images is an error instead of a warning.
        dry_run: build the model and return the plan without training or writing anything.
        precision: see :func:`transferkit.training.trainer.setup_device`.
        distribute: "auto" | "none" | "mirrored" | "multi-worker" (every process of a
            ``TF_CONFIG`` cluster runs this same call, with the same ``name``); the global batch
            is ``batch_size`` x replicas and learning rates scale with the replicas
            (:mod:`transferkit.training.distribute`, docs/DISTRIBUTED.md).
        verbose: 0 silent, 1 one progress bar per phase, 2 one line per epoch.
        callbacks: the app's own Keras callbacks, added to every phase's ``model.fit``.
        progress: a callable (or an object with ``phase_started`` / ``epoch_ended`` /
            ``finished`` methods) receiving :mod:`transferkit.training.progress` events: each
            phase's ``PhaseStarted``, then one ``EpochEnded`` per epoch, and ``Finished`` last.

    Returns:
        A :class:`FitResult`; on a non-chief worker it has no metrics and no run folder.
    """
    started = time.perf_counter()
    if selection not in SELECTION_MODES:
        raise choices_error("selection", selection, SELECTION_MODES)
    overrides = dict(
        backbone=backbone,
        weights=weights,
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        test_split=test_split,
    )
    chosen, measure = resolve_recipe(recipe, size, similar, seed=seed, **overrides)
    # Precision, seeds and determinism hold for this call only; the caller's settings come back.
    with device_scope(precision, chosen.seed, distribute) as device:
        splits = _load_splits(data, chosen, strict)
        _say(verbose, splits.card.summary())
        with device.strategy.scope():
            # Trials are evaluated with predict_on_batch, which a multi-replica model repeats per replica.
            mode = "fast" if dry_run or device.replicas > 1 or device.cluster else selection
            session = _prepare(chosen, splits, measure, size, similar, overrides, verbose, mode)
        session = dataclasses.replace(session, hooks=fit_hooks(callbacks, progress, verbose))
        if dry_run:
            return _planned(session, started)
        if device.cluster is not None:
            check_agreement(device.strategy, recipe_io.dumps(session.recipe), "recipe")
        run_dir = _new_run_dir(out, data, session.recipe.name, name, device)
        _say(verbose, f"Run folder: {run_dir} (if interrupted: transferkit fit --resume {run_dir})")
        # An absolute folder path, so that `fit --resume` works from any working directory.
        source = str(data) if str(data).startswith("tfds:") else str(Path(data).resolve())
        info = {
            "data": source,
            "backbone": session.spec.name,
            "weights": session.weights_source,
            "seed": session.recipe.seed,
            "device": device.describe(),
            "class_names": list(splits.class_names),
            "test_split": splits.holdout.to_dict(),
            "distribution": _distribution_record(device, session.recipe),
        }
        return _train_and_report(session, splits, run_dir, info, device, started, verbose)


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
            f"`transferkit fit --resume {run_dir} --distribute multi-worker` on every worker, "
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


def _load_splits(data: str, recipe: Recipe, strict: bool = False) -> DataSplits:
    """The recipe's splits of ``data``: test held out first (same seed, same split), then validation."""
    data_config = recipe.data
    return load_data(
        data,
        validation_split=data_config.validation_split,
        test_split=data_config.test_split,
        seed=recipe.seed,
        strict=strict,
    )


def _planned(session: _Session, started: float) -> FitResult:
    """What a dry run returns: the built model and the plan, nothing trained or written."""
    return FitResult(
        None,
        session.classifier.model,
        None,
        session.recipe,
        session.selection,
        session.plan,
        time.perf_counter() - started,
        session.weights_source,
    )


@dataclass(frozen=True)
class _Session:
    recipe: Recipe
    spec: BackboneSpec
    classifier: object
    selection: object | None
    plan: tuple
    weights_source: str
    hooks: FitHooks = FitHooks()  # the app's callbacks and progress listener, the bars


def _prepare(
    recipe, splits: DataSplits, measure, size, similar, overrides, verbose, selection_mode: str = "fast"
) -> _Session:
    """Build the base, measure the quadrant when asked (and settle a close call by trials), cut,
    add the head, plan the phases."""
    spec = get_backbone(recipe.backbone.name)
    base, weights_source = build_base(spec, _image_size(recipe, spec), recipe.backbone.weights)
    _say(verbose, weights_source)
    selection = None
    if measure:
        selection = measure_quadrant(splits, spec, base, recipe, size=size, similar=similar, verbose=verbose)
        if selection_mode == "trial" and selection.close_call:
            selection = _settle_by_trials(selection, recipe, splits, size, overrides, verbose)
        recipe = recipe_io.with_overrides(
            recipe_io.load_builtin(selection.quadrant), seed=recipe.seed, **overrides
        )
    if recipe.backbone.cut == "auto":
        if selection is None or selection.cut_point is None:  # an explicit truncate recipe: measure the cut
            known_size = selection.size if selection is not None else (size if size != "auto" else "small")
            selection = measure_quadrant(
                splits, spec, base, recipe, size=known_size, similar=False, verbose=verbose
            )
        recipe = dataclasses.replace(
            recipe, backbone=dataclasses.replace(recipe.backbone, cut=selection.cut_point)
        )
    return _assemble(recipe, spec, base, splits, selection, weights_source, verbose)


def _assemble(recipe, spec, base, splits, selection, weights_source, verbose) -> _Session:
    """Cut the base when the recipe truncates, add the head, plan the phases."""
    if recipe.strategy == "truncate":
        base = truncate(base, recipe.backbone.cut)
    train_bn = any(phase.train_batchnorm for phase in recipe.phases)
    classifier = build_classifier(
        spec, base, len(splits.class_names), recipe.head, batchnorm_inference=not train_bn
    )
    plan = tuple(plan_phase(classifier, spec, phase) for phase in recipe.phases)
    _say(verbose, f"Recipe {recipe.name} ({recipe.strategy}) on {spec.name}:")
    for phase_plan in plan:
        _say(verbose, "  " + phase_plan.describe())
    return _Session(recipe, spec, classifier, selection, plan, weights_source)


def _settle_by_trials(selection: Selection, recipe: Recipe, splits, size, overrides, verbose) -> Selection:
    """Train the close call's candidates briefly (successive halving) and keep the winner.

    The trials see the training and validation splits only: the held-out test split is dropped
    from the splits they are given.
    """
    seen = dataclasses.replace(splits, test=None)
    options = candidates(selection, size_figures(splits), size_measured=size == "auto")
    _say(verbose, f"Close call: trials of {', '.join(c.describe() for c in options)}")

    def recipe_for(candidate) -> Recipe:
        builtin = recipe_io.load_builtin(candidate.quadrant)
        return recipe_io.with_overrides(builtin, seed=recipe.seed, cut=candidate.cut_point, **overrides)

    trials = successive_halving(options, recipe_for, lambda r: _train_trial(r, seen), verbose=verbose)
    keras.utils.set_random_seed(recipe.seed)  # the run itself starts from the seed, trials or not
    return with_trials(selection, trials)


def _train_trial(recipe: Recipe, splits: DataSplits) -> tuple[float, int]:
    """Train ``recipe`` from the pretrained weights in a temporary folder: (validation accuracy, epochs)."""
    keras.utils.set_random_seed(recipe.seed)  # each trial as if it were the run: same seed, any order
    spec = get_backbone(recipe.backbone.name)
    base, weights_source = build_base(spec, _image_size(recipe, spec), recipe.backbone.weights)
    session = _assemble(recipe, spec, base, splits, None, weights_source, verbose=0)
    with tempfile.TemporaryDirectory(prefix="transferkit-trial-") as scratch:
        trainer = _trainer(session, splits, Path(scratch), verbose=0)
        history = trainer.run()
    accuracy = evaluate_model(session.classifier.model, trainer.val_data, splits.class_names).accuracy
    return accuracy, len(history)


def _datasets(recipe: Recipe, spec: BackboneSpec, splits: DataSplits, replicas: int = 1):
    """Training (shuffled), validation and ordered training batches of the global batch size."""
    size, batch = _image_size(recipe, spec), recipe.data.batch_size * replicas
    train = _as_float(make_dataset(splits.train, size, batch, shuffle=True, seed=recipe.seed))
    ordered = make_dataset(splits.train, size, batch)
    val = _as_float(make_dataset(splits.val, size, batch))
    return shard_by_example(train), shard_by_example(val), ordered


def _train_and_report(session: _Session, splits, run_dir: Path, info: dict, device: Device, started, verbose):
    recipe = session.recipe
    write_text(run_dir / "recipe.toml", recipe_io.dumps(recipe))
    runfolder.save_labels(splits.class_names, run_dir)
    write_json(run_dir / "dataset_card.json", splits.card.to_dict())
    if session.selection is not None:  # before the first phase: a resume never re-runs the trials
        write_json(run_dir / "selection.json", session.selection.to_dict())
    runfolder.save_run_info(run_dir, {**info, "status": "training"})
    training = time.perf_counter()
    result = _resume_training(session, splits, run_dir, info, device, started, verbose)
    trials = session.selection.trials if session.selection is not None else None
    if trials is not None:  # what the trials cost next to the fit of the recipe they chose
        costed = dataclasses.replace(trials, final_fit_seconds=time.perf_counter() - training)
        selection = dataclasses.replace(session.selection, trials=costed)
        write_json(run_dir / "selection.json", selection.to_dict())
        result = dataclasses.replace(result, selection=selection)
    return result


def _resume_training(session, splits, run_dir, info, device, started, verbose) -> FitResult:
    recipe, spec = session.recipe, session.spec
    with device.strategy.scope(), peer_failures(run_dir, device.cluster):
        trainer = _trainer(session, splits, run_dir, verbose, device)
        trainer.run()
        recipe = trainer.recipe  # with any "auto" learning rate resolved by its range test
    val = trainer.val_data
    model = session.classifier.model
    if device.replicas > 1 or device.cluster is not None:
        model = local_copy(model)  # evaluated here alone: the strategy's model gathers every replica's
    if device.cluster is not None:
        _say(verbose, f"{device.cluster.describe()}: final weights sha256 {weights_sha256(model)}")
        if not device.cluster.is_chief:  # the chief writes the run folder; this worker's copy goes
            remove_worker_dir(run_dir)
            return dataclasses.replace(_planned(session, started), model=model, recipe=recipe)
    test = _test_metrics(model, recipe, spec, splits, run_dir)  # the held-out pass also saves predictions
    validation = (
        evaluate_model(model, val, splits.class_names)
        if test is not None
        else evaluate_held_out(
            model, val, splits.val.paths, splits.class_names, split="validation", run_dir=run_dir
        )
    )
    headline, metrics = ("test", test) if test is not None else ("validation", validation)
    record = {"headline": headline, **({"test": test.to_dict()} if test else {})}
    write_json(run_dir / "metrics.json", {**record, "validation": validation.to_dict()})
    runfolder.save_model(model, run_dir)
    seconds = time.perf_counter() - started
    runfolder.save_run_info(
        run_dir,
        {
            **info,
            "status": "finished",
            "seconds": round(seconds, 1),
            "plan": [dataclasses.asdict(p) for p in session.plan],
        },
    )
    _write_plots(run_dir, metrics, recipe, model)
    result = FitResult(
        run_dir,
        model,
        metrics,
        recipe,
        session.selection,
        session.plan,
        seconds,
        session.weights_source,
        validation,
        headline,
    )
    _say(verbose, result.summary())
    session.hooks.finished(result)
    return result


def _trainer(
    session: _Session, splits: DataSplits, run_dir: Path, verbose: int, device: Device | None = None
) -> Trainer:
    """A Trainer for the session's recipe on the training split, validating on the validation split.

    With a ``device``, batches are global (``batch_size`` x replicas); under multi-worker training
    frozen-base features are not cached (each worker would need its shard's).
    """
    replicas = device.replicas if device is not None else 1
    cache = device is None or device.cluster is None
    if not cache and any(phase.train == "head" for phase in session.recipe.phases):
        message = "frozen-base features are not cached; head phases train through the frozen base"
        _say(verbose, f"Multi-worker: {message}.")
    train, val, ordered = _datasets(session.recipe, session.spec, splits, replicas)
    batch = session.recipe.data.batch_size * replicas
    return Trainer(
        session.classifier,
        session.spec,
        session.recipe,
        train,
        val,
        ordered,
        run_dir,
        num_classes=len(splits.class_names),
        steps_per_epoch=-(-len(splits.train) // batch),
        validation_steps=-(-len(splits.val) // batch),
        train_labels=splits.train.labels,
        hooks=session.hooks,
        verbose=verbose,
        replicas=replicas,
        multi_worker=not cache,
    )


def _test_metrics(model, recipe, spec, splits, run_dir: Path) -> Metrics | None:
    """The held-out test split's metrics; None when there is no test split."""
    if splits.test is None or not splits.test.labels:
        return None
    test = _as_float(make_dataset(splits.test, _image_size(recipe, spec), recipe.data.batch_size))
    return evaluate_held_out(
        model, test, splits.test.paths, splits.class_names, split="test", run_dir=run_dir
    )


def _write_plots(run_dir: Path, metrics: Metrics, recipe: Recipe, model: keras.Model) -> None:
    figures.plot_history(run_dir / "history.csv", run_dir / "curves.png")  # phases from its column
    figures.plot_confusion(metrics, run_dir / "confusion.png")
    write_interpretation(run_dir, model)  # from predictions.npz: confused pairs, top losses, Grad-CAM
    write_html_report(run_dir)


def _say(verbose: int, message: str) -> None:
    if verbose:
        print(message, flush=True)


def predict(
    run_dir: str | Path,
    inputs: list[str] | str,
    *,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = 32,
    tta: bool = False,
    contact_sheet: str | Path | None = None,
) -> list[dict]:
    """Classify image files (or every image in a folder) with a finished run's model.

    Args:
        run_dir: a finished run's folder (``model.keras`` and its labels).
        inputs: image files and/or folders (searched recursively).
        top_k: labels listed per image, most probable first.
        batch_size: images per forward pass.
        tta: average the probabilities over the image, its flip and four crops
            (:func:`transferkit.prediction.tta_model`); ``evaluate(run_dir, tta=True)`` against
            ``evaluate(run_dir)`` tells whether that helps on the run's held-out images.
        contact_sheet: also write a PNG grid of the images captioned with their predictions.

    Returns:
        One dict per usable image: ``{"path", "label", "probability", "top": [(label, p), ...]}``;
        unreadable files come back as ``{"path", "error"}``.

    Example:
        >>> rows = transferkit.predict("runs/pets", "photos/", tta=True)  # doctest: +SKIP
        >>> rows[0]["label"], rows[0]["top"]  # doctest: +SKIP
        ('cat', [('cat', 0.93), ('dog', 0.05), ('fox', 0.02)])
    """
    run = runfolder.load_run(run_dir)
    paths = _expand_inputs(inputs)
    images, skipped = load_images(paths, run.image_size)
    skipped_paths = {path for path, _ in skipped}
    usable = [p for p in paths if p not in skipped_paths]
    model = tta_model(run.model) if tta else run.model
    probabilities = (
        model.predict(images.astype("float32"), batch_size=batch_size, verbose=0) if len(usable) else []
    )
    results = []
    for path, probs in zip(usable, probabilities, strict=True):
        top = ranked(probs, run.class_names, top_k)
        results.append({"path": path, "label": top[0][0], "probability": top[0][1], "top": top})
    if contact_sheet is not None and results:
        write_contact_sheet(images, results, contact_sheet)
    results += [{"path": path, "error": reason} for path, reason in skipped]
    return results


def _expand_inputs(inputs: list[str] | str) -> list[str]:
    from transferkit.data.decode import IMAGE_EXTENSIONS

    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    paths: list[str] = []
    for item in map(Path, items):
        if item.is_dir():
            paths += sorted(
                str(p) for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
            )
        elif item.exists():
            paths.append(str(item))
        else:
            raise TransferkitError(f"No such file or folder: {str(item)!r}.")
    if not paths:
        raise TransferkitError(f"No images found in {', '.join(map(str, items))}.")
    return paths


def evaluate(
    run_dir: str | Path, data: str | None = None, *, batch_size: int = 32, tta: bool = False
) -> Metrics:
    """Evaluate a finished run on labelled data: its ``test`` split if it has one, else all of a folder
    (for ``tfds:`` sources without a test split, the validation part).

    Args:
        run_dir: a finished run's folder.
        data: labelled images, as for :func:`fit`; None: the run's own held-out images (those
            its ``predictions.npz`` lists: the test split, else validation).
        batch_size: images per forward pass.
        tta: with test-time augmentation, as ``predict(..., tta=True)``; compare with a call
            without it to see whether it helps (``transferkit evaluate --tta`` prints both).
    """
    run = runfolder.load_run(run_dir)
    if data is None:
        held_out = _as_float(make_dataset(_held_out_images(run.run_dir), run.image_size, batch_size))
        return evaluate_model(tta_model(run.model) if tta else run.model, held_out, run.class_names)
    splits = load_data(data, validation_split=0.5, test_split=0, seed=0)
    unknown = [name for name in splits.class_names if name not in run.class_names]
    if unknown:
        raise TransferkitError(
            f"Class {unknown[0]!r} in {data} is not one the model knows ({', '.join(run.class_names)})."
        )
    remap = [run.class_names.index(name) for name in splits.class_names]
    if splits.test is not None:
        images = splits.test
    elif splits.train.tfds is not None:  # two TFDS splits cannot be concatenated as one set
        images = splits.val
    else:
        parts = (splits.train, splits.val)
        images = dataclasses.replace(
            splits.train,
            paths=tuple(p for part in parts for p in part.paths),
            labels=tuple(label for part in parts for label in part.labels),
        )
    images = dataclasses.replace(images, labels=tuple(remap[label] for label in images.labels))
    dataset = _as_float(make_dataset(images, run.image_size, batch_size))
    return evaluate_model(tta_model(run.model) if tta else run.model, dataset, run.class_names)


def _held_out_images(run_dir: Path) -> ImageSet:
    """The held-out image files and labels that the run's ``predictions.npz`` records."""
    predictions = load_predictions(run_dir)
    if predictions is None or not predictions.paths or predictions.paths[0].startswith("tfds:"):
        raise TransferkitError(
            f"{str(run_dir)!r} lists no held-out image files (no predictions.npz, or a tfds: source); "
            "give the labelled images to evaluate on with --data."
        )
    return ImageSet(predictions.paths, tuple(int(label) for label in predictions.labels))


@tensorflow_warnings_muted
def resume(
    run_dir: str | Path,
    *,
    precision: str = "auto",
    distribute: str = "auto",
    dry_run: bool = False,
    verbose: int = 1,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    progress: object | None = None,
) -> FitResult:
    """Continue an interrupted ``fit`` from its last finished epoch, with the run's own recipe and data.

    Weights, optimizer state, learning-rate schedule position, phase and epoch counter are
    restored; the run ends with the same number of epochs as an uninterrupted one.

    Args:
        run_dir: the run folder ``fit`` printed.
        precision: see :func:`transferkit.training.device.setup_device`.
        distribute: as for :func:`fit`; under multi-worker, every worker resumes ``run_dir`` (a
            non-chief from its own ``workertemp_*`` folder inside it, which it wrote before the stop).
        dry_run: rebuild the model and return the remaining plan without training or writing.
        verbose: 0 silent, 1 one progress bar per phase, 2 one line per epoch.
        callbacks, progress: as for :func:`fit`.
    """
    started = time.perf_counter()
    cluster = read_cluster() if distribute == "multi-worker" else None  # reads TF_CONFIG only
    run_dir = worker_run_dir(Path(run_dir), cluster)
    info = runfolder.read_run_info(run_dir)
    if info.get("status") == "finished":
        raise TransferkitError(f"The run in {str(run_dir)!r} already finished; nothing to resume.")
    recipe = recipe_io.load(run_dir / "recipe.toml")
    with device_scope(precision, recipe.seed, distribute) as device:
        splits = _load_splits(info["data"], recipe)
        if list(splits.class_names) != info["class_names"]:
            raise TransferkitError(
                f"The classes in {info['data']} changed since the run started; cannot resume."
            )
        recorded = info.get("test_split", {}).get("sha256")
        if recorded is not None and recorded != splits.holdout.sha256:
            raise TransferkitError(
                f"The held-out test split of {info['data']} is not the one the run started with "
                "(files were added or removed); cannot resume. Start a new fit."
            )
        with device.strategy.scope():
            session = _prepare(recipe, splits, False, "auto", None, {}, verbose)
        session = dataclasses.replace(session, hooks=fit_hooks(callbacks, progress, verbose))
        if dry_run:
            return _planned(session, started)
        _say(verbose, f"Resuming {run_dir}")
        for leftover in run_dir.rglob(".*.tmp*"):  # half-written temp files of a process killed mid-write
            leftover.unlink(missing_ok=True)
        return _resume_training(session, splits, run_dir, info, device, started, verbose)


def lr_find(
    data: str,
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
    state the phase would start from; the weights are restored after it.

    Args:
        data, recipe, size, similar, backbone, weights, image_size, batch_size, seed: as for :func:`fit`.
        phase: the phase's name or 1-based number (default: the last phase).
        start, end: the swept range of learning rates.
        steps: optimizer steps in the sweep (one rate each); it stops early when the loss diverges.
        out: folder for ``lr_find.json`` and ``lr_find.png``.
        precision: see :func:`transferkit.training.device.setup_device`.
        verbose: 0 silent, 1 progress.

    Returns:
        A :class:`transferkit.training.lr_find.LRFindResult`; ``.suggestion`` is the suggested rate.
    """
    import tempfile

    overrides = dict(backbone=backbone, weights=weights, image_size=image_size, batch_size=batch_size)
    chosen, measure = resolve_recipe(recipe, size, similar, seed=seed, **overrides)
    out = Path(out)
    with device_scope(precision, chosen.seed) as device, tempfile.TemporaryDirectory() as scratch:
        splits = _load_splits(data, chosen)  # the held-out test split stays out of the sweep too
        with device.strategy.scope():
            session = _prepare(chosen, splits, measure, size, similar, overrides, verbose)
            index = _phase_index(session.recipe, phase)
            trainer = _trainer(session, splits, Path(scratch), verbose)
            result = trainer.find_learning_rate(index, start=start, end=end, steps=steps)
    name = session.recipe.phases[index].name
    write_json(out / "lr_find.json", {"recipe": session.recipe.name, "phase": name, **result.to_dict()})
    figures.plot_lr_find(result, out / "lr_find.png")
    _say(verbose, f"Suggested learning rate for phase '{name}': {result.suggestion:.3g} ({out})")
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
