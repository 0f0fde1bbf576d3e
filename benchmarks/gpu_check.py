"""GPU readiness in a few minutes: mixed precision, XLA, throughput against plain Keras, MirroredStrategy.

On a machine with a GPU, on a built-in example dataset exported to a temporary folder and the
default backbone with its offline ImageNet weights:

1. Mixed precision: ``transferkit.fit`` of a short fine-tune (base trained, so float16 gradients
   and Keras' dynamic loss scaling are exercised) in float32 and in mixed_float16, same seed;
   the validation accuracies must agree within noise (two-proportion z test, |z| < 2).
2. XLA: one plain-Keras fine-tuning model compiled with ``jit_compile=False`` and ``True``;
   training images/s after a warm-up epoch, on images held in memory.
3. Throughput against plain Keras on the same job: frozen-feature extraction (transferkit's
   compiled ``feature_step`` against ``Model.predict``) in images/s, and a frozen-recipe fit end to
   end (benchmarks/frozen_base.py's plain-Keras guide recipe against ``transferkit.fit``).
4. ``MirroredStrategy`` over every visible GPU: ``fit(distribute="mirrored")`` against
   ``distribute="none"`` on the same fine-tune: replicas, seconds, accuracy.

Without a GPU it says so and exits 0 (``--cpu-sanity`` then runs a tiny CPU fit through the same
code path). Not part of the test suite, except for that no-GPU path.

Usage:
    python benchmarks/gpu_check.py [--dataset animal_mnist] [--per-class 60] [--epochs 3] [--json out.json]
    python benchmarks/gpu_check.py --checks mixed_precision,mirrored   # a subset

Checked on CPU only so far (``--checks feature_extraction,frozen_fit,mirrored`` and
``mixed_precision`` run there; XLA on CPU compiles for minutes): no GPU figures yet.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as `import transferkit` sets it
from transferkit.runtime.tf_logging import import_quietly  # noqa: E402  (imports no TensorFlow)

import_quietly("tensorflow")  # TensorFlow's start-up lines muted, as the CLI mutes them
sys.path.insert(0, str(Path(__file__).resolve().parent))  # frozen_base, a sibling script

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import transferkit  # noqa: E402
from transferkit import recipes as recipe_io  # noqa: E402
from transferkit.backbones.registry import get_backbone  # noqa: E402
from transferkit.backbones.weights import build_base  # noqa: E402
from transferkit.recipes import HeadConfig  # noqa: E402
from transferkit.training.features import extract_features, feature_step  # noqa: E402
from transferkit.training.model import build_classifier  # noqa: E402

NO_GPU = "No GPU found"
FINE_TUNE, FROZEN = "large_similar", "small_similar"
CHECKS = ("mixed_precision", "xla", "feature_extraction", "frozen_fit", "mirrored")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="animal_mnist", help="built-in example dataset (%(default)s)")
    parser.add_argument("--per-class", type=int, default=60, help="images per class (%(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per phase (%(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default=recipe_io.BackboneConfig().name)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--checks", default=",".join(CHECKS), help="comma-separated subset of: %(default)s")
    parser.add_argument("--cpu-sanity", action="store_true", help="without a GPU: a tiny CPU fit anyway")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def short_recipe(name: str, args: argparse.Namespace, **overrides) -> recipe_io.Recipe:
    """A built-in recipe cut short: ``args.epochs`` per phase, no early stopping."""
    recipe = recipe_io.with_overrides(
        recipe_io.load_builtin(name),
        backbone=args.backbone,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        **overrides,
    )
    return dataclasses.replace(
        recipe, phases=tuple(dataclasses.replace(p, patience=0) for p in recipe.phases)
    )


def timed_fit(folder: Path, recipe: recipe_io.Recipe, out: Path, **options) -> dict:
    started = time.perf_counter()
    result = transferkit.fit(str(folder), recipe=recipe, out=out, verbose=0, selection="fast", **options)
    metrics = result.validation_metrics or result.metrics
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "val_accuracy": round(metrics.accuracy, 4),
        "val_images": metrics.num_samples,
        "device": json.loads((result.run_dir / "run.json").read_text())["device"],
    }


def same_within_noise(a: dict, b: dict) -> dict:
    """Two-proportion z test on the validation accuracies of two fits on the same images."""
    n = a["val_images"]
    pooled = (a["val_accuracy"] + b["val_accuracy"]) / 2
    spread = math.sqrt(max(2 * pooled * (1 - pooled) / max(n, 1), 1e-12))
    z = (b["val_accuracy"] - a["val_accuracy"]) / spread
    return {"z": round(z, 2), "same_within_noise": abs(z) < 2}


def check_mixed_precision(folder: Path, args, out: Path) -> dict:
    recipe = short_recipe(FINE_TUNE, args)
    runs = {
        p: timed_fit(folder, recipe, out, precision=p, distribute="none")
        for p in ("float32", "mixed_float16")
    }
    return {**runs, **same_within_noise(runs["float32"], runs["mixed_float16"])}


def in_memory_batches(folder: Path, size: int, batch: int) -> tf.data.Dataset:
    data = keras.utils.image_dataset_from_directory(
        folder / "train", image_size=(size, size), batch_size=batch, shuffle=True, seed=0, verbose=False
    )
    return data.cache().prefetch(tf.data.AUTOTUNE)


def fine_tune_model(args, size: int, num_classes: int, jit_compile: bool) -> keras.Model:
    spec = get_backbone(args.backbone)
    base, _ = build_base(spec, size, "imagenet")
    model = build_classifier(spec, base, num_classes, HeadConfig()).model
    model.trainable = True  # the whole network trains: the heaviest step, where XLA can matter
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss="sparse_categorical_crossentropy",
        jit_compile=jit_compile,
    )
    return model


def images_per_second(run, images: int) -> float:
    run()  # warm-up: tracing, XLA compilation, autotuning
    started = time.perf_counter()
    run()
    return round(images / (time.perf_counter() - started), 1)


def check_xla(folder: Path, args, size: int, num_classes: int, train_images: int) -> dict:
    data = in_memory_batches(folder, size, args.batch_size)
    rates = {}
    for jit in (False, True):
        model = fine_tune_model(args, size, num_classes, jit)
        rates[f"xla_{'on' if jit else 'off'}_images_per_s"] = images_per_second(
            lambda m=model: m.fit(data, epochs=1, verbose=0), train_images
        )
        keras.backend.clear_session()
    rates["xla_speedup"] = round(rates["xla_on_images_per_s"] / rates["xla_off_images_per_s"], 2)
    return rates


def check_feature_extraction(folder: Path, args, size: int, num_classes: int, train_images: int) -> dict:
    spec = get_backbone(args.backbone)
    base, _ = build_base(spec, size, "imagenet")
    extractor = build_classifier(spec, base, num_classes, HeadConfig()).extractor
    data = in_memory_batches(folder, size, args.batch_size)
    step, dim = feature_step(extractor), int(extractor.output.shape[-1])
    ours = images_per_second(lambda: extract_features(step, data, feature_dim=dim, verbose=0), train_images)
    images_only = data.map(_images_only)
    plain = images_per_second(lambda: extractor.predict(images_only, verbose=0), train_images)
    return {"transferkit_images_per_s": ours, "keras_predict_images_per_s": plain}


def _images_only(images, labels):
    return images


def check_frozen_fit(split: Path, args, out: Path, train_images: int) -> dict:
    from frozen_base import plain_keras_fit, transferkit_fit

    size = get_backbone(args.backbone).default_size
    # test_split 0: fit trains on all of train/, as plain Keras does (the folder has no test/).
    recipe = short_recipe(FROZEN, args, image_size=size, test_split=0.0)
    plain = plain_keras_fit(split, recipe, args.epochs, args.seed)
    ours = transferkit_fit(split, recipe, args.epochs, out)
    work = train_images * args.epochs
    return {
        "plain_keras": {**plain, "images_per_s": round(work / plain["seconds"], 1)},
        "transferkit": {**ours, "images_per_s": round(work / ours["seconds"], 1)},
    }


def check_mirrored(folder: Path, args, out: Path) -> dict:
    recipe = short_recipe(FINE_TUNE, args)
    gpus = len(tf.config.list_physical_devices("GPU"))
    runs = {d: timed_fit(folder, recipe, out, distribute=d) for d in ("none", "mirrored")}
    return {"gpus": gpus, **runs, "speedup": round(runs["none"]["seconds"] / runs["mirrored"]["seconds"], 2)}


def cpu_sanity(work: Path) -> dict:
    """A tiny CPU fit through the same entry point (no GPU figures)."""
    from transferkit.testing import make_image_folder

    folder = make_image_folder(work / "tiny", classes=2, per_class=12, size=16)
    recipe = recipe_io.with_overrides(
        recipe_io.load_builtin(FROZEN), backbone="tiny", weights="random", image_size=16, epochs=1
    )
    return timed_fit(folder, recipe, work / "runs", precision="float32", distribute="none")


def gpu_checks(args, work: Path) -> dict:
    from frozen_base import prepare_folder

    split, classes, train_images, _ = prepare_folder(args.dataset, args.per_class, args.seed, work)
    folder, out = split, work / "runs"
    size = get_backbone(args.backbone).default_size
    results = {"dataset": args.dataset, "classes": classes, "train_images": train_images}
    steps = {
        "mixed_precision": lambda: check_mixed_precision(folder, args, out),
        "xla": lambda: check_xla(folder, args, size, classes, train_images),
        "feature_extraction": lambda: check_feature_extraction(folder, args, size, classes, train_images),
        "frozen_fit": lambda: check_frozen_fit(split, args, out, train_images),
        "mirrored": lambda: check_mirrored(folder, args, out),
    }
    chosen = [name.strip() for name in args.checks.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(steps))
    if unknown:
        raise SystemExit(f"Unknown check(s) {', '.join(unknown)}; choose from {', '.join(steps)}.")
    for name, check in ((name, steps[name]) for name in chosen):
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            results[name] = check()
        except Exception as error:  # one failing check still leaves the others' figures
            results[name] = {"error": f"{type(error).__name__}: {error}"}
        results[name]["check_seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(results[name], indent=2), flush=True)
        keras.backend.clear_session()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpus = tf.config.list_physical_devices("GPU")
    facts = {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "built_with_cuda": tf.test.is_built_with_cuda(),
    }
    with tempfile.TemporaryDirectory(prefix="transferkit-gpu-check-") as scratch:
        if not gpus:
            print(
                f"{NO_GPU}: tf.config.list_physical_devices('GPU') is empty (TensorFlow "
                f"{tf.__version__}, built with CUDA: {facts['built_with_cuda']}). Nothing was measured; "
                "run this on a machine with a GPU.",
                flush=True,
            )
            results = {"gpus": 0, **facts}
            if args.cpu_sanity:
                results["cpu_sanity"] = cpu_sanity(Path(scratch))
                print(f"CPU sanity fit: {results['cpu_sanity']}", flush=True)
        else:
            names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
            print(f"{len(gpus)} GPU(s): {', '.join(names)}", flush=True)
            results = {"gpus": len(gpus), "gpu_names": names, **facts, **gpu_checks(args, Path(scratch))}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
