"""Two trained classifiers as one model: the mean of their class probabilities.

Where the selector cannot tell a truncation from the whole network
(:func:`transferkit.selection.rules.averages_truncation`), ``fit`` trains both: the whole network in
the run folder, the truncation (its *partner*) in ``<run>/partner`` (a run folder of its own:
``recipe.toml``, checkpoints, ``state.json``, ``history.csv``, so that ``--resume`` continues
either). The run's ``model.keras`` is :func:`average_models` of the two: one input, both members,
an ``Average`` layer; it loads, predicts and exports as any other classifier.

Example:
    >>> import keras
    >>> first = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    >>> second = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    >>> model = average_models({"whole_network": first, "truncation": second})
    >>> sorted(members_of(model))
    ['truncation', 'whole_network']
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np

from transferkit import recipes as recipe_io
from transferkit.fileio import write_text
from transferkit.recipes import Recipe
from transferkit.reporting.metrics import Predict
from transferkit.selection.quadrants import quadrant_for

PARTNER_DIR = "partner"  # the truncation's own run folder, inside the run's
AVERAGED_NAME = "averaged"  # the Keras name of the averaged model: how it is recognised once saved
MAIN_MEMBER, PARTNER_MEMBER = "whole_network", "truncation"


def partner_recipe(recipe: Recipe, cut: str, overrides: Mapping[str, object]) -> Recipe:
    """The truncation trained beside ``recipe``: the built-in ``small_dissimilar`` cut at ``cut``,
    with ``recipe``'s seed and the caller's overrides (backbone, image size, epochs, ...)."""
    builtin = recipe_io.load_builtin(quadrant_for("small", similar=False))
    return recipe_io.with_overrides(builtin, seed=recipe.seed, cut=cut, **overrides)


def partner_dir(run_dir: Path) -> Path:
    return Path(run_dir) / PARTNER_DIR


def write_partner(run_dir: Path, recipe: Recipe) -> None:
    """Record the partner's recipe before training starts: a resumed run finds it there."""
    write_text(partner_dir(run_dir) / "recipe.toml", recipe_io.dumps(recipe))


def read_partner(run_dir: Path) -> Recipe | None:
    """The partner recipe of the run in ``run_dir``; None when the run trains one network."""
    path = partner_dir(run_dir) / "recipe.toml"
    return recipe_io.load(path) if path.exists() else None


def average_models(members: Mapping[str, keras.Model]) -> keras.Model:
    """One model taking the members' input and returning the mean of their probabilities.

    Each member is wrapped under its own name (``members``' keys), so that two members built
    from the same backbone (the same layer names inside) save and load as one ``model.keras``.
    """
    first = next(iter(members.values()))
    pixels = keras.Input(first.input_shape[1:], dtype=first.inputs[0].dtype, name="pixels")
    outputs = [keras.Model(m.inputs, m.outputs[0], name=name)(pixels) for name, m in members.items()]
    averaged = keras.layers.Average(name="mean_probabilities", dtype="float32")(outputs)
    return keras.Model(pixels, averaged, name=AVERAGED_NAME)


def members_of(model: keras.Model) -> dict[str, keras.Model]:
    """``{name: member}`` of a model made by :func:`average_models` (loaded or not); {} otherwise."""
    if model.name != AVERAGED_NAME:
        return {}
    return {layer.name: layer for layer in model.layers if isinstance(layer, keras.Model)}


class MemberPredictor:
    """A :data:`~transferkit.reporting.metrics.Predict` for the averaged model that keeps each
    member's probabilities: one pass over a split gives the average's metrics and every member's.

    ``predictors``: ``{member name: its Predict}`` (e.g. the steps each member's training traced).
    The average is computed as the model's ``Average`` layer computes it, in float32.
    """

    def __init__(self, predictors: Mapping[str, Predict]):
        self.predictors = dict(predictors)
        self.outputs: dict[str, list[np.ndarray]] = {name: [] for name in self.predictors}

    def __call__(self, images) -> np.ndarray:
        probabilities = []
        for name, predict in self.predictors.items():
            output = np.asarray(predict(images), dtype=np.float32)
            self.outputs[name].append(output)
            probabilities.append(output)
        return np.sum(probabilities, axis=0, dtype=np.float32) / np.float32(len(probabilities))

    def probabilities(self, rows: int) -> dict[str, np.ndarray]:
        """``{member name: (rows, classes) probabilities}`` of the images seen, in order: the first
        ``rows`` (the rows that pad the last batch, :func:`~transferkit.reporting.metrics.predict_rows`,
        come last and are dropped)."""
        return {name: np.concatenate(parts)[:rows] for name, parts in self.outputs.items() if parts}
