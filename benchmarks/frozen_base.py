"""transferkit against the plain-Keras way, measured side by side in one process.

1. Frozen-base training, the ``small_similar`` recipe. Plain Keras is the Keras
   transfer-learning guide's recipe: ``image_dataset_from_directory`` -> in-model RandomFlip,
   RandomRotation, RandomZoom, RandomTranslation, RandomContrast -> preprocessing -> base
   (``training=False``) -> GlobalAveragePooling -> Dropout -> Dense, ``fit`` for E epochs.
   transferkit is ``transferkit.fit(folder, recipe="small_similar", epochs=E)``: one pass
   through the frozen base per cached augmented copy, then the head on cached features. The
   recipe's EarlyStopping is switched off (``--early-stopping`` keeps it) so that both sides
   run exactly E epochs and neither picks its best epoch on the validation set. Same
   image folder and train/val split (transferkit holds no test split out of train/: both train
   on the same images), same backbone with identical ImageNet weights (both built with
   ``transferkit.backbones.weights.build_base``), image size, batch size, epochs, optimizer and
   augmentation ranges. Wall time covers everything from the image folder to a trained model
   with its validation accuracy; transferkit's also includes writing its run folder (model,
   report, plots, TensorBoard logs), which plain Keras does not do, so the ratio is conservative.
2. Augmentation throughput: Keras' layer chain against ``transferkit.training.augment.RandomAffine`` on
   the same float32 batches, both compiled with ``tf.function``.

Runs are A/B-interleaved (the order alternates every repeat) and the paired ratio of each
repeat is reported, as ``PERFORMANCE.md`` advises: absolute figures drift 10-20% between
processes on shared machines. Not part of the test suite; ``make benchmark`` runs it.

Usage:
    python benchmarks/frozen_base.py                      # defaults: a few minutes on 2 cores
    python benchmarks/frozen_base.py --per-class 60 --epochs 20 --skip-augment
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as `import transferkit` sets it
from transferkit.runtime.tf_logging import import_quietly  # noqa: E402  (imports no TensorFlow)

import_quietly("tensorflow")  # TensorFlow's start-up lines muted, as the CLI mutes them

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import transferkit  # noqa: E402
from transferkit import recipes as recipe_io  # noqa: E402
from transferkit.backbones.registry import get_backbone  # noqa: E402
from transferkit.backbones.weights import build_base  # noqa: E402
from transferkit.data.examples import export_dataset  # noqa: E402
from transferkit.data.loading import stratified_split  # noqa: E402
from transferkit.data.pipeline import without_autotune  # noqa: E402
from transferkit.selection.transferability import usable_cpus  # noqa: E402
from transferkit.training.augment import RandomAffine, build_augmentation  # noqa: E402
from transferkit.training.callbacks import read_history  # noqa: E402
from transferkit.training.device import environment, setup_device  # noqa: E402
from transferkit.training.model import preprocessing_layer  # noqa: E402

RECIPE = "small_similar"
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], "float32")
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], "float32")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=10, help="training epochs, both sides (default 10)")
    parser.add_argument("--image-size", type=int, default=128, help="input size in pixels (default 128)")
    parser.add_argument("--per-class", type=int, default=30, help="images per class (default 30)")
    parser.add_argument(
        "--backbone", default="mobilenet_v2_torchvision", help="backbone (default %(default)s)"
    )
    parser.add_argument(
        "--dataset", default="animal_mnist", help="built-in example dataset (default %(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="batch size, both sides (default 32)")
    parser.add_argument("--repeats", type=int, default=2, help="timed plain/transferkit pairs (default 2)")
    parser.add_argument("--seed", type=int, default=1337, help="seed of the split, weights init and shuffles")
    parser.add_argument(
        "--no-warmup", action="store_true", help="skip the untimed 1-epoch warm-up of each side"
    )
    parser.add_argument(
        "--early-stopping",
        action="store_true",
        help="keep the recipe's EarlyStopping (patience); off by default, so both sides run exactly E epochs",
    )
    parser.add_argument(
        "--aug-size", type=int, default=224, help="augmentation batches: image size (default 224)"
    )
    parser.add_argument(
        "--aug-batch", type=int, default=32, help="augmentation batches: batch size (default 32)"
    )
    parser.add_argument(
        "--aug-steps", type=int, default=10, help="batches per timed augmentation run (default 10)"
    )
    parser.add_argument(
        "--aug-repeats", type=int, default=5, help="interleaved augmentation pairs (default 5)"
    )
    parser.add_argument(
        "--keras-no-autotune",
        action="store_true",
        help="plain Keras' datasets without tf.data autotuning: no idle stall when Keras deletes an\n"
        "iterator (every epoch, training and validation); transferkit's pipelines never autotune",
    )
    parser.add_argument("--skip-training", action="store_true", help="only the augmentation benchmark")
    parser.add_argument("--skip-augment", action="store_true", help="only the training benchmark")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    for name in (
        "epochs",
        "image_size",
        "per_class",
        "batch_size",
        "repeats",
        "aug_size",
        "aug_batch",
        "aug_steps",
        "aug_repeats",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# --------------------------------------------------------------------------------------------
# Data: one image folder with a fixed train/val split, read by both sides.


def prepare_folder(dataset: str, per_class: int, seed: int, root: Path) -> tuple[Path, int, int, int]:
    """Export ``dataset`` and lay it out as ``root/split/{train,val}/<class>/``: one split for both sides.

    Returns ``(folder, classes, train images, val images)``.
    """
    exported = export_dataset(dataset, root / "export", per_class=per_class, seed=0)
    folder = root / "split"
    classes = sorted(p.name for p in exported.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [
        (label, path) for label, name in enumerate(classes) for path in sorted((exported / name).iterdir())
    ]
    train_idx, val_idx = stratified_split([label for label, _ in files], 0.2, seed)
    for split, indices in (("train", train_idx), ("val", val_idx)):
        for index in indices:
            label, source = files[index]
            target = folder / split / classes[label] / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
    return folder, len(classes), len(train_idx), len(val_idx)


# --------------------------------------------------------------------------------------------
# Plain Keras: the transfer-learning guide's recipe.


def keras_augmentation(
    config: recipe_io.AugmentConfig, contrast: bool = True, seed: int | None = None
) -> list:
    """Keras' layer chain with the recipe's ranges (same ranges as ``RandomAffine``)."""
    layers = keras.layers
    chain = []
    if config.flip != "none":
        chain.append(
            layers.RandomFlip(config.flip if config.flip != "both" else "horizontal_and_vertical", seed=seed)
        )
    chain += [
        layers.RandomRotation(config.rotation_degrees / 360.0, fill_mode=config.fill_mode, seed=seed),
        layers.RandomZoom(config.zoom, fill_mode=config.fill_mode, seed=seed),
        layers.RandomTranslation(
            config.translation, config.translation, fill_mode=config.fill_mode, seed=seed
        ),
    ]
    if contrast and config.contrast:
        chain.append(layers.RandomContrast(config.contrast, seed=seed))
    return chain


def keras_preprocessing(kind: str) -> list:
    """The backbone's pixel normalisation with stock Keras layers (a frozen affine for Caffe's BGR)."""
    if kind == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0)]
    if kind == "torch":
        return [
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Normalization(mean=_IMAGENET_MEAN, variance=_IMAGENET_STD**2),
        ]
    layer = preprocessing_layer(kind)
    return [layer] if layer is not None else []


def plain_keras_fit(
    folder: Path, recipe: recipe_io.Recipe, epochs: int, seed: int, autotune: bool = True
) -> dict:
    """Guide recipe, end to end; returns wall and CPU seconds, final val accuracy and epochs run.

    ``autotune=False``: the datasets without tf.data's autotuning, whose thread makes deleting an
    iterator wait (``transferkit.data.pipeline.without_autotune``); Keras deletes the training
    and the validation iterator every epoch here, and the guide's pipeline pays it.
    """
    started, cpu = time.perf_counter(), time.process_time()
    keras.utils.set_random_seed(seed)
    spec = get_backbone(recipe.backbone.name)
    size, batch = recipe.backbone.image_size, recipe.data.batch_size
    phase = recipe.phases[0]
    load = dict(image_size=(size, size), batch_size=batch, label_mode="int", color_mode="rgb", verbose=False)
    train = keras.utils.image_dataset_from_directory(folder / "train", shuffle=True, seed=seed, **load)
    val = keras.utils.image_dataset_from_directory(folder / "val", shuffle=False, **load)
    num_classes = len(train.class_names)
    # As in the guide: prefetch only. (A .cache() after these already-batched, shuffled datasets
    # would freeze the first epoch's batches; decoding small PNGs overlaps with the steps anyway.)
    train = train.prefetch(tf.data.AUTOTUNE)
    val = val.prefetch(tf.data.AUTOTUNE)
    if not autotune:
        train, val = without_autotune(train), without_autotune(val)

    base, _ = build_base(spec, size, recipe.backbone.weights)
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    x = inputs
    for layer in [*keras_augmentation(recipe.augment, seed=seed), *keras_preprocessing(spec.preprocessing)]:
        x = layer(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(recipe.head.dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(phase.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    fit_started = time.perf_counter()
    history = model.fit(train, epochs=epochs, validation_data=val, verbose=0)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "val_accuracy": float(history.history["val_accuracy"][-1]),
        "epochs": len(history.epoch),
        "fit_seconds": seconds - (fit_started - started),
    }


def transferkit_fit(folder: Path, recipe: recipe_io.Recipe, epochs: int, out: Path) -> dict:
    """``transferkit.fit`` with the recipe, end to end: wall and CPU seconds, val accuracy, epochs run."""
    started, cpu = time.perf_counter(), time.process_time()
    result = transferkit.fit(str(folder), recipe=recipe, epochs=epochs, out=out, verbose=0)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu
    rows = read_history(result.run_dir / "history.csv")
    head_seconds = sum(float(row["seconds"]) for row in rows)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "val_accuracy": float(result.metrics.accuracy),
        "epochs": len(rows),
        "head_epoch_seconds": head_seconds,
    }


def training_recipe(args: argparse.Namespace) -> recipe_io.Recipe:
    recipe = recipe_io.with_overrides(
        recipe_io.load_builtin(RECIPE),
        backbone=args.backbone,
        epochs=args.epochs,
        image_size=args.image_size,
        batch_size=args.batch_size,
        seed=args.seed,
        # The folder has train/ and val/ and no test/, so fit would hold 15% of train/ out for its
        # test split and train on 200 images where plain Keras trains on 240: the same images here.
        test_split=0.0,
    )
    if not args.early_stopping:
        recipe = dataclasses.replace(
            recipe, phases=tuple(dataclasses.replace(p, patience=0) for p in recipe.phases)
        )
    if not recipe.backbone.image_size:
        recipe = dataclasses.replace(
            recipe,
            backbone=dataclasses.replace(
                recipe.backbone, image_size=get_backbone(args.backbone).default_size
            ),
        )
    return recipe


def _fresh() -> None:
    keras.backend.clear_session()
    gc.collect()


def benchmark_training(args: argparse.Namespace, folder: Path, work: Path) -> dict:
    recipe = training_recipe(args)
    spec = get_backbone(recipe.backbone.name)
    # The first build converts the packaged weights and caches them: keep that out of the timings.
    _, source = build_base(spec, recipe.backbone.image_size, recipe.backbone.weights)
    print(f"  weights: {source}", flush=True)
    counter = iter(range(10_000))

    def run(side: str, epochs: int) -> dict:
        _fresh()
        if side == "plain":
            return plain_keras_fit(folder, recipe, epochs, args.seed, autotune=not args.keras_no_autotune)
        return transferkit_fit(folder, recipe, epochs, work / f"runs{next(counter)}")

    if not args.no_warmup:
        print("  warm-up (1 epoch each, untimed) ...", flush=True)
        for side in ("plain", "transferkit"):
            run(side, 1)
    pairs = []
    for repeat in range(args.repeats):
        order = ("plain", "transferkit") if repeat % 2 == 0 else ("transferkit", "plain")
        result = {}
        for side in order:
            result[side] = run(side, args.epochs)
            r = result[side]
            print(
                f"  repeat {repeat + 1}/{args.repeats} {side:<11} {r['seconds']:7.1f} s "
                f"({r['cpu_seconds']:5.1f} s CPU)  "
                f"val acc {r['val_accuracy']:.3f}  ({r['epochs']} epochs)",
                flush=True,
            )
        result["ratio"] = result["plain"]["seconds"] / result["transferkit"]["seconds"]
        result["cpu_ratio"] = result["plain"]["cpu_seconds"] / result["transferkit"]["cpu_seconds"]
        pairs.append(result)
    return {
        "recipe": RECIPE,
        "backbone": spec.name,
        "image_size": recipe.backbone.image_size,
        "batch_size": recipe.data.batch_size,
        "epochs": args.epochs,
        "cached_passes": min(recipe.augment.cached_passes, args.epochs),
        "early_stopping": args.early_stopping,
        "keras_autotune": not args.keras_no_autotune,
        "pairs": pairs,
    }


# --------------------------------------------------------------------------------------------
# Augmentation throughput.


def augmentation_batches(folder: Path | None, size: int, batch: int, count: int) -> list[tf.Tensor]:
    """``count`` float32 batches of real images from ``folder`` (random pixels when there is none)."""
    batches: list[tf.Tensor] = []
    if folder is not None:
        data = keras.utils.image_dataset_from_directory(
            folder / "train", image_size=(size, size), batch_size=batch, shuffle=True, seed=0, verbose=False
        )
        for images, _ in data.repeat():
            if images.shape[0] == batch:
                batches.append(tf.identity(tf.cast(images, tf.float32)))
            if len(batches) == count:
                break
    rng = np.random.default_rng(0)
    while len(batches) < count:
        batches.append(tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")))
    return batches


def _compiled(layers: list) -> tf.types.experimental.GenericFunction:
    @tf.function(reduce_retracing=True)
    def step(images):
        for layer in layers:
            images = layer(images, training=True)
        return images

    return step


def _images_per_second(step, batches: list[tf.Tensor], steps: int) -> float:
    started = time.perf_counter()
    for index in range(steps):
        out = step(batches[index % len(batches)])
        float(out[0, 0, 0, 0])  # wait for the result
    return steps * int(batches[0].shape[0]) / (time.perf_counter() - started)


def benchmark_augmentation(args: argparse.Namespace, folder: Path | None) -> list[dict]:
    config = recipe_io.load_builtin(RECIPE).augment
    batches = augmentation_batches(folder, args.aug_size, args.aug_batch, min(args.aug_steps, 8))
    no_contrast = dataclasses.replace(config, contrast=0.0)
    cases = [
        (
            "flip+rotate+zoom+translate",
            "4 Keras layers",
            keras_augmentation(config, contrast=False, seed=0),
            "RandomAffine",
            [build_augmentation(no_contrast, seed=0)],
        ),
        (
            "+ contrast (the recipe's)",
            "5 Keras layers",
            keras_augmentation(config, contrast=True, seed=0),
            "RandomAffine",
            [build_augmentation(config, seed=0)],
        ),
    ]
    assert all(isinstance(layers[0], RandomAffine) for *_, layers in cases)
    results = []
    for name, a_name, a_layers, b_name, b_layers in cases:
        a, b = _compiled(a_layers), _compiled(b_layers)
        for step in (a, b):  # trace + warm up
            _images_per_second(step, batches, 2)
        pairs = []
        for repeat in range(args.aug_repeats):
            order = ((a, "keras"), (b, "affine")) if repeat % 2 == 0 else ((b, "affine"), (a, "keras"))
            rates = {side: _images_per_second(step, batches, args.aug_steps) for step, side in order}
            pairs.append({**rates, "ratio": rates["affine"] / rates["keras"]})
        results.append({"case": name, "keras": a_name, "transferkit": b_name, "pairs": pairs})
        print(
            f"  {name}: keras {statistics.median(p['keras'] for p in pairs):.0f} img/s, RandomAffine "
            f"{statistics.median(p['affine'] for p in pairs):.0f} img/s",
            flush=True,
        )
    return results


# --------------------------------------------------------------------------------------------
# Report.


def machine_facts() -> dict:
    """The machine and software, as a run's ``run.json`` records them, and the load now."""
    env = environment()
    return {
        "cpu": env["cpu"],
        "cpu_vector_extension": env["cpu_vector_extension"],
        "cpu_count": env["cpus"],
        "usable_cpus": usable_cpus(),
        "gpus": len(env["gpus"]),
        **{key: env[key] for key in ("tensorflow", "keras", "transferkit", "python")},
        "load_average_start": round(os.getloadavg()[0], 2),
    }


def _median(values) -> float:
    return statistics.median(list(values))


def print_report(facts: dict, setup: dict, training: dict | None, augmentation: list[dict] | None) -> None:
    line = "-" * 96
    print(f"\n{line}\ntransferkit vs plain Keras, paired A/B in one process (medians over repeats)\n{line}")
    print(
        f"machine: {facts['cpu']}; {facts['usable_cpus']} usable of {facts['cpu_count']} CPUs, "
        f"{facts['gpus']} GPU; TF {facts['tensorflow']}, Keras {facts['keras']}, Python {facts['python']}; "
        f"load average {facts['load_average_start']} -> {facts['load_average_end']}"
    )
    if training is not None:
        pairs = training["pairs"]
        print(
            f"\n1. Frozen-base training, recipe {training['recipe']}: {setup['dataset']}, "
            f"{setup['classes']} classes, "
            f"{setup['train']} train / {setup['val']} val images, {training['backbone']} at "
            f"{training['image_size']} px, batch {training['batch_size']}, {training['epochs']} epochs, "
            f"{len(pairs)} repeat(s)"
        )
        print(f"   {'':<42} {'wall s':>8} {'CPU s':>8} {'img/s*':>8} {'val acc':>8} {'epochs':>7}")
        seen = setup["train"] * training["epochs"]
        for side, label in (
            (
                "plain",
                "plain Keras (guide recipe"
                + ("" if training.get("keras_autotune", True) else ", no autotune")
                + ")",
            ),
            ("transferkit", f"transferkit.fit ({training['cached_passes']} cached passes)"),
        ):
            seconds = _median(p[side]["seconds"] for p in pairs)
            cpu = _median(p[side]["cpu_seconds"] for p in pairs)
            accuracy = _median(p[side]["val_accuracy"] for p in pairs)
            epochs = _median(p[side]["epochs"] for p in pairs)
            figures = f"{seconds:8.1f} {cpu:8.1f} {seen / seconds:8.1f} {accuracy:8.3f} {epochs:7.0f}"
            print(f"   {label:<42} {figures}")
        ratios = [p["ratio"] for p in pairs]
        print(
            f"   speed-up (plain / transferkit wall time): median {_median(ratios):.2f}x "
            f"(pairs: {', '.join(f'{r:.2f}x' for r in ratios)})"
        )
        cpu_ratios = [p["cpu_ratio"] for p in pairs]
        print(
            f"   in CPU seconds (process time, all threads; steadier on a busy machine): median "
            f"{_median(cpu_ratios):.2f}x (pairs: {', '.join(f'{r:.2f}x' for r in cpu_ratios)})"
        )
        head = _median(p["transferkit"]["head_epoch_seconds"] for p in pairs)
        plain_fit = _median(p["plain"]["fit_seconds"] for p in pairs)
        print(
            "   * training images x epochs / wall s. Wall time runs from the image folder to a trained\n"
            f"     model with its val accuracy; plain Keras spent {plain_fit:.1f} s of it in model.fit.\n"
            "     transferkit's includes writing its run folder (saved model, report, plots, TensorBoard\n"
            f"     logs); its head epochs on the cached features took {head:.1f} s in all."
        )
        if not training["early_stopping"]:
            print("   EarlyStopping (recipe patience) off on both sides so both run exactly the same epochs.")
    if augmentation is not None:
        print(
            f"\n2. Augmentation throughput: float32 {setup['aug_size']}x{setup['aug_size']} batches of "
            f"{setup['aug_batch']}, {setup['aug_steps']} batches per run, {setup['aug_repeats']} interleaved "
            f"pairs, tf.function"
        )
        print(
            f"   {'transforms':<28} {'Keras chain':<15} {'img/s':>7} {'RandomAffine img/s':>19} "
            f"{'paired ratio (median, min-max)':>31}"
        )
        for case in augmentation:
            pairs = case["pairs"]
            ratios = [p["ratio"] for p in pairs]
            spread = f"{_median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
            print(
                f"   {case['case']:<28} {case['keras']:<15} {_median(p['keras'] for p in pairs):7.0f} "
                f"{_median(p['affine'] for p in pairs):19.0f} {spread:>31}"
            )
    print(line)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # "N out of the last M calls triggered retracing": one model per run
    warnings.filterwarnings("ignore", message=".*shuffle=True.*was passed.*")
    # transferkit.fit seeds everything and switches on TF op determinism on CPU, process-wide:
    # do it first, so that both sides of every comparison run under the same settings.
    device = setup_device("auto", args.seed)
    facts = machine_facts()
    print(f"device: {device.describe()}; {facts['usable_cpus']} CPUs; TF {facts['tensorflow']}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="transferkit-bench-"))
    training = augmentation = None
    setup = {
        "dataset": args.dataset,
        "aug_size": args.aug_size,
        "aug_batch": args.aug_batch,
        "aug_steps": args.aug_steps,
        "aug_repeats": args.aug_repeats,
    }
    try:
        folder, setup["classes"], setup["train"], setup["val"] = prepare_folder(
            args.dataset, args.per_class, args.seed, work
        )
        if not args.skip_augment:
            print("Augmentation throughput ...", flush=True)
            augmentation = benchmark_augmentation(args, folder)
        if not args.skip_training:
            print("Frozen-base training ...", flush=True)
            training = benchmark_training(args, folder, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    facts["load_average_end"] = round(os.getloadavg()[0], 2)
    print_report(facts, setup, training, augmentation)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": facts,
                    "setup": setup,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "training": training,
                    "augmentation": augmentation,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
