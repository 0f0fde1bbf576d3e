"""Whole-network training steps: transferkit's fine-tune phase against plain Keras ``fit``, one model.

Issue 10 asks that fine-tune steps stay at least as fast as plain Keras ``fit`` on the same model,
and that the benchmark show the ratio and the share of the machine's matmul peak reached.

Both sides train the same graph, built twice from the same weights: transferkit's augmentation
(the recipe's ranges) -> the classifier (pixel normalisation, the backbone with its ImageNet
weights, pooling, head), with the layers the recipe's first base-training phase trains (for
``large_similar``: every block above the stem that ``frozen_input_stride`` keeps frozen,
BatchNorm frozen). transferkit compiles it as its Trainer does (``LayerwiseAdamW``: discriminative rates,
decoupled weight decay, warm-up then cosine; its loss and metrics) and runs it under its device
set-up (op determinism on a CPU), through the view its Trainer fits: the frozen BatchNorm folded
into the convolutions each step (``Classifier.training_model``: the same variables and function).
Plain Keras compiles the model as built, as the fine-tuning guide does: ``keras.optimizers.AdamW``
at one rate, sparse cross-entropy, accuracy; no determinism. Both
``fit`` the same in-memory batches of random pixels, so decoding is left out: this measures the
step. Epochs of ``--steps`` steps; the first epoch (tracing) is dropped and the median of the rest
is the step time. The two sides alternate, fresh models every repeat.

The matmul peak is a float32 ``n x n`` matmul in a ``tf.function`` on the same threads, in
GFLOP/s. A train step's FLOPs are counted from the layers: the forward pass (2 x the multiply-adds
of every Conv2D, DepthwiseConv2D and Dense), plus twice the forward FLOPs of the layers from the
first trainable one up (the gradients with respect to inputs and to weights each cost about one
forward pass). Share of peak = FLOPs per step / step time / matmul peak.

Not part of the test suite. Usage:
    python benchmarks/fine_tune_step.py                    # 224 px, batch 32: a few minutes on 2 cores
    python benchmarks/fine_tune_step.py --image-size 128 --repeats 3 --json runs/fine_tune_step.json
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as `import transferkit` sets it
from transferkit.runtime.tf_logging import import_quietly  # noqa: E402  (imports no TensorFlow)

import_quietly("tensorflow")  # TensorFlow's start-up lines muted, as the CLI mutes them

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from transferkit import recipes as recipe_io  # noqa: E402
from transferkit.backbones.registry import get_backbone  # noqa: E402
from transferkit.backbones.weights import build_base  # noqa: E402
from transferkit.data.pipeline import without_autotune  # noqa: E402
from transferkit.training.augment import build_augmentation  # noqa: E402
from transferkit.training.device import device_scope  # noqa: E402
from transferkit.training.model import build_classifier  # noqa: E402
from transferkit.training.network_phase import training_graph  # noqa: E402
from transferkit.training.optimizers import compile_classifier, phase_optimizer  # noqa: E402
from transferkit.training.trainable import block_lr_multipliers, set_trainable  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frozen_base import machine_facts  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--recipe", default="large_similar", help="built-in recipe (default %(default)s)")
    parser.add_argument("--image-size", type=int, default=224, help="input side in pixels (default 224)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size, both sides (default 32)")
    parser.add_argument("--classes", type=int, default=10, help="output classes (default 10)")
    parser.add_argument("--steps", type=int, default=6, help="steps per timed epoch (default 6)")
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs per side, the first dropped (default 3)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="interleaved pairs (default 2)")
    parser.add_argument(
        "--matmul-size", type=int, default=2048, help="side of the peak matmul (default 2048)"
    )
    parser.add_argument("--seed", type=int, default=1337, help="weights init and batches (default 1337)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    for name in ("image_size", "batch_size", "classes", "steps", "repeats", "matmul_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first, which traces, is dropped)")
    return args


@dataclasses.dataclass
class Side:
    """One side's model: the training graph, the classifier inside it, and the phase it trains."""

    graph: keras.Model
    classifier: object
    phase: recipe_io.Phase


def build_side(recipe: recipe_io.Recipe, classes: int, size: int, *, transferkit: bool) -> Side:
    """The recipe's training graph for its first base-training phase, trainable as that phase sets it.

    transferkit's side trains the classifier as its Trainer does, through
    ``Classifier.training_model()`` (frozen BatchNorm folded into the convolutions each step, the
    same variables); the plain side trains the classifier's model as built.
    """
    spec = get_backbone(recipe.backbone.name)
    keras.utils.set_random_seed(recipe.seed)  # the same head on both sides
    base, _ = build_base(spec, size, recipe.backbone.weights)
    phase = next(p for p in recipe.phases if p.train != "head")
    classifier = build_classifier(
        spec, base, classes, recipe.head, batchnorm_inference=not phase.train_batchnorm
    )
    set_trainable(classifier, spec, phase)
    model = classifier.training_model() if transferkit else classifier.model
    graph = training_graph(model, build_augmentation(recipe.augment, recipe.seed), multi_worker=False)
    return Side(graph, classifier, phase)


def compile_transferkit(side: Side, recipe: recipe_io.Recipe, classes: int, steps: int) -> None:
    """As transferkit's Trainer compiles a phase that trains the base (one replica)."""
    spec = get_backbone(recipe.backbone.name)
    optimizer = phase_optimizer(
        side.phase,
        learning_rate=side.phase.learning_rate,
        steps_per_epoch=steps,
        multipliers=block_lr_multipliers(side.classifier, spec, side.phase),
    )
    compile_classifier(side.graph, optimizer, classes, recipe.head.label_smoothing)


def compile_plain(side: Side) -> None:
    """As the Keras fine-tuning guide compiles: one rate, AdamW, sparse cross-entropy, accuracy."""
    side.graph.compile(
        optimizer=keras.optimizers.AdamW(side.phase.learning_rate, weight_decay=side.phase.weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )


class EpochTimer(keras.callbacks.Callback):
    """Wall and process CPU seconds (all threads) of each epoch."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started, self._cpu = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)
        self.cpu_seconds.append(time.process_time() - self._cpu)


def timed_fit(graph: keras.Model, batches: tf.data.Dataset, steps: int, epochs: int) -> dict:
    """Fit ``epochs`` epochs of ``steps``; the step time is the median of the epochs after the first."""
    timer = EpochTimer()
    graph.fit(batches, steps_per_epoch=steps, epochs=epochs, callbacks=[timer], verbose=0)
    steady = [s / steps for s in timer.seconds[1:]]
    cpu = [s / steps for s in timer.cpu_seconds[1:]]
    return {
        "first_epoch_s": timer.seconds[0],
        "step_s": statistics.median(steady),
        "step_cpu_s": statistics.median(cpu),
        "steps_s": steady,
    }


def batches(size: int, batch: int, classes: int, seed: int) -> tf.data.Dataset:
    """Random uint8 pixels and labels held in memory, repeated: the same batches for both sides.

    Without tf.data's autotuning (``without_autotune``: deleting an iterator waits out its
    thread's sleep), so neither side's epochs carry that stall.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (4 * batch, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, 4 * batch).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).cache().repeat()
    return without_autotune(data)


# --------------------------------------------------------------------------------------------
# FLOPs and the machine's matmul peak.


def _layers(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def forward_flops(layer: keras.layers.Layer) -> float:
    """2 x multiply-adds of one image through ``layer`` (Conv2D, DepthwiseConv2D, Dense; else 0)."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, channels, multiplier = layer.kernel.shape
        _, h, w, _ = layer.output.shape
        return 2.0 * h * w * kh * kw * channels * multiplier
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, cin, cout = layer.kernel.shape
        _, h, w, _ = layer.output.shape
        return 2.0 * h * w * kh * kw * cin * cout
    if isinstance(layer, keras.layers.Dense):
        cin, cout = layer.kernel.shape
        return 2.0 * cin * cout
    return 0.0


def train_step_flops(classifier, batch: int) -> dict:
    """Forward FLOPs per image, and per train step: forward + 2 x forward above the first trainable layer."""
    layers = [*_layers(classifier.base), *_layers(classifier.head)]
    flops = [forward_flops(layer) for layer in layers]
    first = next(i for i, layer in enumerate(layers) if layer.trainable_weights)
    forward, trained = sum(flops), sum(flops[first:])
    return {
        "forward_gflop_per_image": forward / 1e9,
        "trained_share_of_forward": trained / forward if forward else 0.0,
        "train_gflop_per_step": batch * (forward + 2 * trained) / 1e9,
        "first_trainable_layer": layers[first].name,
    }


def matmul_peak(n: int, repeats: int = 5) -> float:
    """float32 ``n x n`` matmul GFLOP/s: the median of ``repeats`` timed calls after one warm-up."""
    a = tf.random.stateless_normal((n, n), seed=(1, 2))
    b = tf.random.stateless_normal((n, n), seed=(3, 4))
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        matmul(a, b).numpy()
        seconds.append(time.perf_counter() - started)
    return 2.0 * n**3 / statistics.median(seconds) / 1e9


# --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    recipe = recipe_io.with_overrides(
        recipe_io.load_builtin(args.recipe), image_size=args.image_size, seed=args.seed
    )  # the phases for this image size
    data = batches(args.image_size, args.batch_size, args.classes, args.seed)
    pairs, flops = [], None
    for repeat in range(args.repeats):
        order = ("transferkit", "plain") if repeat % 2 == 0 else ("plain", "transferkit")
        pair = {}
        for name in order:
            gc.collect()
            keras.backend.clear_session()
            if name == "transferkit":
                with device_scope("float32", recipe.seed, "none"):
                    side = build_side(recipe, args.classes, args.image_size, transferkit=True)
                    compile_transferkit(side, recipe, args.classes, args.steps)
                    pair[name] = timed_fit(side.graph, data, args.steps, args.epochs)
            else:
                side = build_side(recipe, args.classes, args.image_size, transferkit=False)
                compile_plain(side)
                pair[name] = timed_fit(side.graph, data, args.steps, args.epochs)
            flops = flops or train_step_flops(side.classifier, args.batch_size)
            step = pair[name]
            print(
                f"repeat {repeat + 1} {name:<11} step {step['step_s'] * 1000:.0f} ms, "
                f"{step['step_cpu_s'] * 1000:.0f} ms CPU",
                flush=True,
            )
        pair["plain_over_transferkit"] = pair["plain"]["step_s"] / pair["transferkit"]["step_s"]
        pair["cpu_plain_over_transferkit"] = pair["plain"]["step_cpu_s"] / pair["transferkit"]["step_cpu_s"]
        pairs.append(pair)
    peak = matmul_peak(args.matmul_size)
    results = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    results |= {"pairs": pairs, "flops": flops, "matmul_peak_gflops": peak}
    for name in ("transferkit", "plain"):
        step = statistics.median(p[name]["step_s"] for p in pairs)
        results[name] = {
            "step_ms": 1000 * step,
            "step_cpu_ms": 1000 * statistics.median(p[name]["step_cpu_s"] for p in pairs),
            "images_per_s": args.batch_size / step,
            "gflops": flops["train_gflop_per_step"] / step,
            "share_of_matmul_peak": flops["train_gflop_per_step"] / step / peak,
        }
    results["ratio_median"] = statistics.median(p["plain_over_transferkit"] for p in pairs)
    results["cpu_ratio_median"] = statistics.median(p["cpu_plain_over_transferkit"] for p in pairs)
    return results


def print_report(facts: dict, results: dict) -> None:
    args, flops = results["args"], results["flops"]
    print(
        f"\n{args['recipe']}'s first base-training phase, {args['image_size']} px, batch {args['batch_size']}"
    )
    print(
        f"machine: {facts['cpu']} ({facts['usable_cpus']} usable CPUs), "
        f"load average {facts['load_average_start']}"
    )
    print(
        f"model: {flops['forward_gflop_per_image']:.3f} GFLOP forward per image, "
        f"{flops['trained_share_of_forward']:.0%} of it above the first trainable layer "
        f"({flops['first_trainable_layer']}); {flops['train_gflop_per_step']:.1f} GFLOP per train step"
    )
    print(f"matmul peak: {results['matmul_peak_gflops']:.0f} GFLOP/s (float32, {args['matmul_size']}^2)")
    print(f"\n{'':<12}{'step ms':>9}{'CPU ms':>8}{'images/s':>10}{'GFLOP/s':>9}{'of peak':>9}")
    for name in ("transferkit", "plain"):
        r = results[name]
        print(
            f"{name:<12}{r['step_ms']:>9.0f}{r['step_cpu_ms']:>8.0f}{r['images_per_s']:>10.1f}"
            f"{r['gflops']:>9.1f}{r['share_of_matmul_peak']:>9.1%}"
        )
    print()
    for key, what in (("", "step time"), ("cpu_", "CPU time per step")):
        ratios = ", ".join(f"{p[key + 'plain_over_transferkit']:.2f}" for p in results["pairs"])
        print(f"plain Keras {what} / transferkit's: {results[key + 'ratio_median']:.2f}x (pairs: {ratios})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    facts = machine_facts()
    results = run(args)
    print_report(facts, results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": facts, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
