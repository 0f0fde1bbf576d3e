"""How far held-out accuracy falls under pixel noise nobody would see.

A model can reach its accuracy on exact pixel values: a head on an early cut of a frozen base,
trained on clean renders (typefaces, icons), reads fine texture statistics that noise of a
couple of grey levels changes. Measured on the tuning sets at 96 px (test split, Gaussian noise
of standard deviation 2 in 0-255 units): truncated typefaces 0.708 -> 0.292 (n = 48), truncated
icon themes 0.650 -> 0.500 (n = 60), while a frozen full-depth Animal-MNIST model went 0.833 ->
0.867 and a whole-network one 0.817 -> 0.900 (n = 60). Inputs from a camera, a scanner or a lossy
file carry more noise than that, so a run measures it and says so when accuracy falls. (Since
then the truncation recipe trains with invisible noise of its own, ``[augment] noise``: the same
truncations, retrained, held 0.739 and 0.636 under it.)

Example:
    >>> r = Robustness(split="test", pixel_noise=2.0, clean_accuracy=0.70, accuracy=0.30, num_samples=48)
    >>> round(r.drop, 2), r.fragile
    (0.4, True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from transferkit.reporting.metrics import Predict, predict_dataset

if TYPE_CHECKING:
    import tensorflow as tf

PIXEL_NOISE = 2.0  # standard deviation in 0-255 units: below what the eye notices, below a camera's own
# A fall of 10 points or more is reported. On the tuning sets above the fragile models fell 15-40
# points and the others rose by 3-8 (noise acting as a little test-time augmentation).
FRAGILE_DROP = 0.10
# The same images saved as JPEG at this quality and read back: what a photo app or a web upload does
# to an image. It is also a check independent of small_dissimilar's training noise (Gaussian): on
# three tuning sets that noise moved JPEG accuracy by +11, -1 and -5 points (docs/RECIPES.md, Robustness).
JPEG_QUALITY = 75


@dataclass(frozen=True)
class Robustness:
    """Held-out accuracy on the same images with Gaussian pixel noise added (seeded), and saved as JPEG.

    Attributes:
        split: "test" (or "validation" when the run has no test split).
        pixel_noise: the noise's standard deviation, in 0-255 units.
        clean_accuracy: accuracy on the images as they are.
        accuracy: accuracy on the noisy images.
        num_samples: images scored.
        jpeg_quality: the JPEG quality the images were saved at (0: not measured, older runs).
        jpeg_accuracy: accuracy on the JPEG copies (None: not measured).
        trained_noise: ``{network: the [augment] noise it trained with}`` (its member name in
            metrics.json; empty for older runs), so that the advice builds on it.
    """

    split: str
    pixel_noise: float
    clean_accuracy: float
    accuracy: float
    num_samples: int
    jpeg_quality: int = 0
    jpeg_accuracy: float | None = None
    trained_noise: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def drop(self) -> float:
        return self.clean_accuracy - self.accuracy

    @property
    def jpeg_drop(self) -> float:
        return 0.0 if self.jpeg_accuracy is None else self.clean_accuracy - self.jpeg_accuracy

    @property
    def fragile(self) -> bool:
        return max(self.drop, self.jpeg_drop) >= FRAGILE_DROP

    def to_dict(self) -> dict[str, object]:
        record = {**dataclasses.asdict(self), "drop": round(self.drop, 4)}
        return {**record, "jpeg_drop": round(self.jpeg_drop, 4), "fragile": self.fragile}

    @classmethod
    def from_dict(cls, record) -> Robustness:
        """From ``metrics.json``'s record (one written before JPEG was measured too has no JPEG)."""
        fields = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: record[name] for name in fields if name in record})

    def describe(self) -> str:
        """One sentence: accuracy under each perturbation measured, against the clean figure."""
        jpeg = (
            ""
            if self.jpeg_accuracy is None
            else f", saved as JPEG (quality {self.jpeg_quality}) {self.jpeg_accuracy:.1%}"
        )
        return (
            f"Under invisible pixel noise (Gaussian, standard deviation {self.pixel_noise:g} of 255) the "
            f"{self.split} accuracy is {self.accuracy:.1%}{jpeg} ({self.clean_accuracy:.1%} without)."
        )

    def warning(self) -> str:
        """The advice printed and reported for a fragile model ("" otherwise)."""
        if not self.fragile:
            return ""
        falls = []
        if self.drop >= FRAGILE_DROP:
            falls.append(
                f"under pixel noise nobody would see (Gaussian, standard deviation {self.pixel_noise:g} "
                f"of 255) {self.split} accuracy falls {self.clean_accuracy:.3f} -> {self.accuracy:.3f}"
            )
        if self.jpeg_drop >= FRAGILE_DROP:
            falls.append(
                f"saved as JPEG (quality {self.jpeg_quality}) {self.split} accuracy falls "
                f"{self.clean_accuracy:.3f} -> {self.jpeg_accuracy:.3f}"
            )
        text = "; ".join(falls)
        noisy = {name.replace("_", " "): noise for name, noise in self.trained_noise.items() if noise}
        if not noisy:
            advice = (
                "train with pixel noise (`[augment] noise = 1.5` in a recipe TOML, as small_dissimilar "
                "does; 3 if that is not enough)"
            )
        else:
            quiet = [name.replace("_", " ") for name, noise in self.trained_noise.items() if not noise]
            trained = ", ".join(f"the {name} at {noise:g}" for name, noise in noisy.items())
            trained += "".join(f"; the {name} without" for name in quiet)
            advice = (
                f"train with more pixel noise than it did ({trained}): `[augment] noise = 3` in a recipe TOML"
            )
        return (
            f"{text[0].upper()}{text[1:]}: the model relies on exact pixel values. If its inputs will "
            f"come from cameras, scanners or lossy files, {advice}, and check on such images with "
            "`transferkit evaluate RUN --data`."
        )


def measure_robustness(
    model,
    dataset: tf.data.Dataset,
    clean_accuracy: float,
    split: str,
    predict: Predict | None = None,
    seed: int = 0,
    pixel_noise: float = PIXEL_NOISE,
    jpeg_quality: int = JPEG_QUALITY,
    trained_noise: dict[str, float] | None = None,
) -> Robustness:
    """Score ``model`` on ``dataset``'s images with seeded Gaussian noise added (clipped to 0-255),
    then on the images saved as JPEG at ``jpeg_quality`` and decoded again.

    Args:
        model: the classifier (raw 0-255 RGB in).
        dataset: batched float ``(images, labels)``, in a fixed order.
        clean_accuracy: the same images' accuracy without noise (already measured).
        split: which split ``dataset`` is, for the record.
        predict: as for :func:`~transferkit.reporting.metrics.predict_dataset`.
        seed: the noise's seed: the same seed gives the same figure.
        pixel_noise: the standard deviation, in 0-255 units.
        jpeg_quality: 1-100.
        trained_noise: recorded for the advice (:attr:`Robustness.trained_noise`).
    """

    def scored(images: tf.data.Dataset) -> tuple[float, int]:
        probabilities, labels = predict_dataset(model, images, predict)
        return round(float(np.mean(np.argmax(probabilities, axis=1) == labels)), 4), len(labels)

    accuracy, count = scored(add_noise(dataset, pixel_noise, seed))
    jpeg, _ = scored(as_jpeg(dataset, jpeg_quality))
    noise = dict(trained_noise or {})
    return Robustness(
        split, pixel_noise, round(clean_accuracy, 4), accuracy, count, jpeg_quality, jpeg, noise
    )


def as_jpeg(dataset: tf.data.Dataset, quality: int) -> tf.data.Dataset:
    """``dataset`` with each image encoded as JPEG at ``quality`` (rounded to 8-bit first) and
    decoded again: deterministic, no seed."""
    import tensorflow as tf

    def recoded(images, labels, *rest):
        pixels = tf.cast(tf.clip_by_value(tf.round(images), 0.0, 255.0), tf.uint8)
        again = tf.map_fn(lambda image: tf.image.adjust_jpeg_quality(image, quality), pixels)
        return (tf.cast(again, images.dtype), labels, *rest)

    return dataset.map(recoded)


def add_noise(dataset: tf.data.Dataset, pixel_noise: float, seed: int) -> tf.data.Dataset:
    """``dataset`` with Gaussian noise of standard deviation ``pixel_noise`` added to each batch's
    images; batch ``i`` draws from the stateless seed ``(seed, i)``."""
    import tensorflow as tf  # here, so that reading a record (the HTML report) needs no TensorFlow

    def noisy(index, element):
        images, labels = element[0], element[1]
        noise = tf.random.stateless_normal(tf.shape(images), seed=tf.stack([tf.cast(seed, tf.int64), index]))
        return tf.clip_by_value(images + pixel_noise * noise, 0.0, 255.0), labels

    return dataset.enumerate().map(noisy)
