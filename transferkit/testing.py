"""Synthetic image folders for tests, notebooks and smoke runs (the tiny backbone is in the registry),
and a stand-in for a kill in the middle of training.

Example:
    >>> import tempfile
    >>> root = make_image_folder(tempfile.mkdtemp(), classes=3, per_class=4)
    >>> sorted(p.name for p in root.iterdir())
    ['class_0', 'class_1', 'class_2']
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

_COLOURS = np.array(
    [
        [220, 40, 40],
        [40, 180, 60],
        [40, 70, 220],
        [230, 200, 40],
        [160, 60, 200],
        [40, 200, 200],
        [240, 130, 40],
    ]
)


def synthetic_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy image whose colour and stripe orientation depend on ``label`` (learnable, not trivial)."""
    colour = _COLOURS[label % len(_COLOURS)] * (0.7 + 0.3 * rng.random())
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = np.sin((xx if label % 2 else yy) * (0.5 + 0.2 * (label // len(_COLOURS))) + rng.random() * 6)
    image = colour[None, None, :] * (0.75 + 0.25 * stripes[..., None])
    image += rng.normal(0, 25, image.shape)
    return np.clip(image, 0, 255).astype("uint8")


def make_image_folder(
    root: str | Path,
    *,
    classes: int = 3,
    per_class: int = 12,
    size: int = 32,
    seed: int = 0,
    image_format: str = "png",
    splits: tuple[str, ...] = (),
) -> Path:
    """Write ``root/[split/]class_i/img_j.<format>``; returns ``root``.

    Args:
        root: folder to create.
        classes: number of class subfolders.
        per_class: images per class (per split when ``splits`` is given).
        size: image width and height.
        seed: seed of the image noise.
        image_format: "png" or "jpg".
        splits: e.g. ``("train", "val")`` to write an already-split folder.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits or ("",):
        for label in range(classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                Image.fromarray(synthetic_image(label, size, rng)).save(
                    folder / f"img_{index}.{image_format}"
                )
    return root


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a ``transferkit`` child process in a test: CPU only, quiet, one thread per pool.

    CPU only because TensorFlow's op determinism (one seed, one result) is what the tests rely on;
    one thread per pool because several children share two cores, and idle pool threads spinning
    for work cost ~15% more CPU there (results do not depend on it). ``TF_CONFIG`` is dropped
    unless given in ``extra``.
    """
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    return {
        **env,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "-1",
        "PYTHONUNBUFFERED": "1",
        "TF_NUM_INTRAOP_THREADS": "1",
        "TF_NUM_INTEROP_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def synthetic_arrays(per_class: int = 8, classes: int = 3, size: int = 32, seed: int = 0):
    """``(images [N, size, size, 3] uint8, labels [N] int32)``: ``per_class`` synthetic images a class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class).astype("int32")
    images = np.stack([synthetic_image(int(label), size, rng) for label in labels])
    return images, labels


def synthetic_batches(batch: int = 8, **arrays):
    """A trainer's three datasets of :func:`synthetic_arrays`: (shuffled float32, ordered float32,
    ordered uint8), the training, validation and feature-caching batches of a tiny run."""
    import tensorflow as tf

    images, labels = synthetic_arrays(**arrays)
    ordered = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)
    shuffled = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(64, seed=1).batch(batch)
    as_float = ordered.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return shuffled.map(lambda x, y: (tf.cast(x, tf.float32), y)), as_float, ordered


def tiny_trainer(classifier, recipe, run_dir, train, val, ordered, *, trainer_class=None, **options):
    """A :class:`~transferkit.training.trainer.Trainer` of the tiny backbone over :func:`synthetic_batches`
    (3 classes, 3 steps a split, silent); ``options`` override its keyword arguments."""
    from transferkit.backbones.registry import get_backbone
    from transferkit.training.trainer import Trainer

    settings = {"num_classes": 3, "steps_per_epoch": 3, "validation_steps": 3, "verbose": 0, **options}
    make = trainer_class or Trainer
    return make(classifier, get_backbone("tiny"), recipe, train, val, ordered, run_dir, **settings)


class Interrupted(Exception):
    """Raised by :class:`InterruptAt`: training stopped as a kill would stop it."""


def stopped(*args, **kwargs):
    """A stand-in for any stage of a fit (patched over it): stops it as Ctrl-C or SIGTERM would."""
    raise KeyboardInterrupt


def interrupt_at(epoch: int):
    """A Keras callback that raises :class:`Interrupted` at the start of (0-based, run-wide) ``epoch``.

    Keras is imported here, not with the module, so that importing ``transferkit.testing`` (as
    the notebooks do) does not load TensorFlow before ``transferkit`` has muted its log lines.
    """
    import keras

    class InterruptAt(keras.callbacks.Callback):
        def on_epoch_begin(self, current, logs=None):
            if current == epoch:
                raise Interrupted

    return InterruptAt()


def add_trainer_callback(patch, make_callback) -> None:
    """Every phase a :class:`~transferkit.training.trainer.Trainer` fits while ``patch`` (pytest's
    ``monkeypatch`` or one of its contexts) is in force also runs ``make_callback(trainer)``, a
    Keras callback (None: none for that trainer), as :func:`interrupt_at` to stop a run where a
    kill would.

    Example (in a test)::

        with monkeypatch.context() as patch:
            add_trainer_callback(patch, lambda trainer: interrupt_at(1))
            with pytest.raises(Interrupted):
                transferkit.fit(...)
    """
    from transferkit.training.trainer import Trainer

    original = Trainer._callbacks

    def with_callback(self, index, phase):
        callbacks, writer = original(self, index, phase)
        extra = make_callback(self)
        return ([*callbacks, extra] if extra is not None else callbacks), writer

    patch.setattr(Trainer, "_callbacks", with_callback)


def resume_after_interrupt(make_trainer, run_dir: Path, epoch: int, monkeypatch):
    """Train ``make_trainer(run_dir)`` until it is interrupted at the start of run-wide ``epoch``
    (as a kill would stop it), then resume it with a fresh trainer (as a new process would);
    returns the resumed trainer, finished.

    Args:
        make_trainer: ``run_dir -> Trainer``, building the model anew each call.
        run_dir: the run folder both share.
        epoch: the (0-based, run-wide) epoch to stop at.
        monkeypatch: pytest's fixture (the interruption is patched into the trainer's callbacks).
    """
    with monkeypatch.context() as patch:
        add_trainer_callback(patch, lambda trainer: interrupt_at(epoch))
        try:
            make_trainer(run_dir).run()
        except Interrupted:
            pass
        else:
            raise AssertionError(f"the run was not interrupted at epoch {epoch}")
    resumed = make_trainer(run_dir)
    resumed.run()
    return resumed


def assert_same_training(trainer, reference) -> None:
    """Two finished trainers wrote the same history (but its seconds) and hold the same weights."""
    from transferkit.training.callbacks import read_history

    def rows(run_dir):
        return [
            {k: v for k, v in row.items() if k != "seconds"} for row in read_history(run_dir / "history.csv")
        ]

    assert rows(trainer.run_dir) == rows(reference.run_dir)
    final, expected = trainer.classifier.model.get_weights(), reference.classifier.model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(final, expected, strict=True))
