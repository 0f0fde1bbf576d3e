"""Two trained classifiers as one model: the mean of their class probabilities.

Where the selector cannot tell two recipes apart, ``fit`` trains both and averages them: the whole
network and a truncation between the dissimilar floors
(:func:`transferkit.selection.rules.averages_truncation`), a truncation and the frozen base where
the probe puts the cut's lead over the base's output within reach
(:func:`transferkit.selection.rules.averages_frozen_base`). The picked network trains in the run
folder, the other (its *partner*) in ``<run>/partner`` (a run folder of its own: ``recipe.toml``,
checkpoints, ``state.json``, ``history.csv``, so that ``--resume`` continues either); where both
first phases train on the same augmented passes they are computed once
(:mod:`transferkit.training.shared_passes`). The run's ``model.keras`` is :func:`average_models` of
the two: one input, both members (named by :func:`member_name`), an ``Average`` layer; it loads,
predicts and exports as any other classifier. Calibrated
(:mod:`transferkit.training.calibration`), the mean's log-probabilities are divided by the
temperature instead, in Keras' own layers, so it still loads without transferkit.

Example:
    >>> import keras
    >>> first = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    >>> second = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    >>> model = average_models({"whole_network": first, "truncation": second})
    >>> sorted(members_of(model))
    ['truncation', 'whole_network']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from transferkit import recipes as recipe_io
from transferkit.console import format_p
from transferkit.fileio import write_text
from transferkit.recipes import Recipe
from transferkit.reporting.metrics import Predict
from transferkit.training.calibration import SOFTMAX_LAYER, scaled_probabilities

PARTNER_DIR = "partner"  # the truncation's own run folder, inside the run's
AVERAGED_NAME = "averaged"  # the Keras name of the averaged model: how it is recognised once saved
HEAD_LAYER = "head"  # the classifier's head model (training.model.build_head)
LOG_PROBABILITIES = "log_predictions"  # a calibrated average's members end in it (log-softmax)
MEMBER_NAMES = {
    "retrain": "whole_network",
    "fine_tune": "whole_network",
    "truncate": "truncation",
    "freeze": "frozen_base",
}


def member_name(recipe: Recipe) -> str:
    """The name a network of ``recipe`` has in an averaged model (and in ``metrics.json``).

    Example:
        >>> member_name(recipe_io.load_builtin("small_similar"))
        'frozen_base'
    """
    return MEMBER_NAMES[recipe.strategy]


def in_words(name: str) -> str:
    """A member's name as the messages and the report write it.

    Example:
        >>> in_words("frozen_base")
        'frozen base'
    """
    return name.replace("_", " ")


def partner_recipe(recipe: Recipe, quadrant: str, cut: str | None, overrides: Mapping[str, object]) -> Recipe:
    """The network trained beside ``recipe``: the built-in recipe of ``quadrant`` (cut at ``cut``
    where it truncates), with ``recipe``'s seed and the caller's overrides (backbone, image size,
    epochs, ...)."""
    return recipe_io.with_overrides(recipe_io.load_builtin(quadrant), seed=recipe.seed, cut=cut, **overrides)


def partner_dir(run_dir: Path) -> Path:
    return Path(run_dir) / PARTNER_DIR


def write_partner(run_dir: Path, recipe: Recipe) -> None:
    """Record the partner's recipe before training starts: a resumed run finds it there."""
    write_text(partner_dir(run_dir) / "recipe.toml", recipe_io.dumps(recipe))


def read_partner(run_dir: Path) -> Recipe | None:
    """The partner recipe of the run in ``run_dir``; None when the run trains one network."""
    path = partner_dir(run_dir) / "recipe.toml"
    return recipe_io.load(path) if path.exists() else None


def average_models(members: Mapping[str, keras.Model], temperature: float = 1.0) -> keras.Model:
    """One model taking the members' input and returning the mean of their probabilities.

    Each member is wrapped under its own name (``members``' keys), so that two members built
    from the same backbone (the same layer names inside) save and load as one ``model.keras``.

    With a ``temperature`` (other than 1) it returns ``softmax(log(mean) / temperature)``, which
    ranks the classes as the mean does: the two members give log-probabilities
    (:func:`log_probability_member`), ``log(p + q) = log p + softplus(log q - log p)`` (the 1/2 of
    the mean cancels in the softmax), then a ``Rescaling`` by ``1 / temperature`` and a softmax.
    Every layer is Keras' own: the model loads in safe mode without transferkit and converts to
    TFLite and ONNX as the plain average does.
    """
    first = next(iter(members.values()))
    pixels = keras.Input(first.input_shape[1:], dtype=first.inputs[0].dtype, name="pixels")
    if temperature == 1.0:
        outputs = [keras.Model(m.inputs, m.outputs[0], name=name)(pixels) for name, m in members.items()]
        averaged = keras.layers.Average(name="mean_probabilities", dtype="float32")(outputs)
        return keras.Model(pixels, averaged, name=AVERAGED_NAME)
    if len(members) != 2:
        raise ValueError(f"a temperature averages two members' log-probabilities, not {len(members)}")
    log_p, log_q = (log_probability_member(m, name)(pixels) for name, m in members.items())
    difference = keras.layers.Subtract(name="log_ratio", dtype="float32")([log_q, log_p])
    softplus = keras.layers.Activation("softplus", name="log1p_ratio", dtype="float32")(difference)
    log_sum = keras.layers.Add(name="log_sum", dtype="float32")([log_p, softplus])
    scaled = keras.layers.Rescaling(1.0 / temperature, name="temperature", dtype="float32")(log_sum)
    averaged = keras.layers.Activation("softmax", name="mean_probabilities", dtype="float32")(scaled)
    return keras.Model(pixels, averaged, name=AVERAGED_NAME)


def log_probability_member(member: keras.Model, name: str) -> keras.Model:
    """``member`` (a transferkit classifier) ending in log-probabilities: its layers, shared, up to
    its softmax layer's input, then a log-softmax ``Dense`` with that layer's weights (copied)."""
    head = member.get_layer(HEAD_LAYER)
    dense = head.get_layer(SOFTMAX_LAYER)
    # The tensor the head was called on in the classifier's graph: a nested model's own ``input`` is
    # its inner one, and training calls the head in graphs of its own too (head phases).
    (node,) = (n for n in head._inbound_nodes if any(t is member.outputs[0] for t in n.output_tensors))
    features = keras.Model(head.inputs, dense.input, name="head_features")(node.input_tensors[0])
    logits = keras.layers.Dense(
        dense.units, activation="log_softmax", dtype="float32", name=LOG_PROBABILITIES
    )
    output = logits(features)
    logits.set_weights(dense.get_weights())
    return keras.Model(member.inputs, output, name=name)


def members_of(model: keras.Model) -> dict[str, keras.Model]:
    """``{name: member}`` of a model made by :func:`average_models` (loaded or not), each giving its
    probabilities (a calibrated average's members, which give log-probabilities, wrapped); {} otherwise."""
    if model.name != AVERAGED_NAME:
        return {}
    members = {layer.name: layer for layer in model.layers if isinstance(layer, keras.Model)}
    return {name: _probabilities(member) for name, member in members.items()}


def _probabilities(member: keras.Model) -> keras.Model:
    """``member`` giving probabilities: itself, or, ending in log-probabilities, with ``exp`` on top."""
    if member.layers[-1].name != LOG_PROBABILITIES:
        return member
    exp = keras.layers.Activation("exponential", dtype="float32", name="probabilities")
    return keras.Model(member.inputs, exp(member.outputs[0]), name=member.name)


def mean_probabilities(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """The members' mean, in float32, as the averaged model's ``Average`` layer computes it."""
    return np.sum(probabilities, axis=0, dtype=np.float32) / np.float32(len(probabilities))


class MemberPredictor:
    """A :data:`~transferkit.reporting.metrics.Predict` for the averaged model that keeps each
    member's probabilities: one pass over a split gives the average's metrics and every member's.

    ``predictors``: ``{member name: its Predict}`` (e.g. the steps each member's training traced).
    The average is computed as the model's ``Average`` layer computes it, in float32; with a
    ``temperature``, as the calibrated model gives it (:func:`average_models`). With ``alone`` (a
    member's name: the model is that network, :class:`PartnerCheck`), that member's probabilities
    are the answer and the others' are only recorded.
    """

    def __init__(self, predictors: Mapping[str, Predict], temperature: float = 1.0, alone: str | None = None):
        self.predictors = dict(predictors)
        self.temperature = temperature
        self.alone = alone  # a member whose probabilities are the answer (the others only recorded)
        self.outputs: dict[str, list[np.ndarray]] = {name: [] for name in self.predictors}

    def __call__(self, images) -> np.ndarray:
        probabilities = []
        for name, predict in self.predictors.items():
            output = np.asarray(predict(images), dtype=np.float32)
            self.outputs[name].append(output)
            probabilities.append(output)
        if self.alone is not None:  # its own temperature is folded into it (calibration)
            return self.outputs[self.alone][-1]
        mean = mean_probabilities(probabilities)
        if self.temperature == 1.0:
            return mean
        return scaled_probabilities(mean, self.temperature).astype(np.float32)

    def probabilities(self, rows: int) -> dict[str, np.ndarray]:
        """``{member name: (rows, classes) probabilities}`` of the images seen, in order: the first
        ``rows`` (the rows that pad the last batch, :func:`~transferkit.reporting.metrics.predict_rows`,
        come last and are dropped)."""
        return {name: np.concatenate(parts)[:rows] for name, parts in self.outputs.items() if parts}

    def mean_accuracy(self, labels: np.ndarray) -> float:
        """Top-1 accuracy of the members' mean on the images seen (``labels``: their classes)."""
        mean = np.mean(list(self.probabilities(len(labels)).values()), axis=0)
        return float(np.mean(mean.argmax(axis=1) == np.asarray(labels)))


PARTNER_SIGNIFICANCE = 0.05
"""The partner is dropped from the average when the run's own network classifies more validation
images right than its rival (:data:`AGAINST_THE_AVERAGE`) and a one-sided sign test on the images
only one of them gets right puts the difference below this p-value (5%: the conventional level, not
tuned on any data set)."""

AGAINST_THE_AVERAGE = frozenset({"frozen_base", "truncation"})
"""Pairs of networks (the run's own and its partner, either way round) whose check weighs the run's
own network against the average, not against the partner.

A whole network's check is against its truncation: only the whole network clearly ahead of it drops
it (measured: the held-out playing cards at 224 px, the whole network 0.955, its truncation 0.807,
their average 0.898 on the test split). A truncation and the frozen base only train side by side
where the probe puts the two close (:func:`transferkit.selection.rules.averages_frozen_base`,
:func:`~transferkit.selection.rules.averages_leading_cut`), and there one can be clearly ahead of the
other on validation and still gain from averaging it.
On the tuning sets' 13 such runs (96 px) a check against the frozen base would have dropped it
twice (digits at 150 per class, seed 0: truncation 0.955, average 0.977 on the test split, the
truncation ahead of the frozen base on validation 294 against 287 of 300, p = 0.03; and digits at
45 per class, seed 1, where the two scored alike), the check against the average never: it
ties the average (294 against 294) there."""


@dataclass(frozen=True)
class PartnerCheck:
    """Whether the averaged model keeps its partner, from the two networks' validation predictions.

    Only the run's own network (the pick) clearly ahead of its rival (the partner, or for
    :data:`AGAINST_THE_AVERAGE` pairs the average) drops the partner, never the reverse: the
    pick is what the selector measured best, and a whole network's validation accuracy is a fair
    estimate (its phase runs a fixed schedule) where a truncation's is a flattering one (its early
    stopping and augmentation check select on the same images).

    Attributes:
        kept: the model averages the two; False: the run's own network alone is the model.
        main, partner: the two networks' names (:func:`member_name`).
        rival: what the run's own network is weighed against: ``"partner"`` or ``"average"``.
        images: validation images compared.
        main_correct, partner_correct, average_correct: how many each classifies right.
        only_main, only_rival: images only one of the two weighed gets right (the sign test's counts).
        p_value: one-sided sign test, "the run's own network is not better" (1.0 without such images).
    """

    kept: bool
    main: str
    partner: str
    rival: str
    images: int
    main_correct: int
    partner_correct: int
    average_correct: int
    only_main: int
    only_rival: int
    p_value: float

    @property
    def rival_correct(self) -> int:
        return self.average_correct if self.rival == "average" else self.partner_correct

    @property
    def rival_name(self) -> str:
        """The rival in words: ``"frozen base"``, ``"average"``."""
        return "average" if self.rival == "average" else in_words(self.partner)

    def describe(self) -> str:
        main, partner = in_words(self.main), in_words(self.partner)
        counts = (
            f"validation {self.main_correct} against {self.rival_correct} of {self.images} right, "
            f"{format_p(self.p_value)}"
        )
        if self.kept:
            return f"Averaging kept: the {main} is not clearly ahead of the {self.rival_name} ({counts})"
        return (
            f"The {partner} dropped from the average: the {main} is clearly ahead of the {self.rival_name} "
            f"({counts}); the model is the {main} alone"
        )

    def to_dict(self) -> dict:
        return {**self.__dict__, "significance": PARTNER_SIGNIFICANCE}


def check_partner(member_probabilities: Mapping[str, np.ndarray], labels: np.ndarray) -> PartnerCheck:
    """:class:`PartnerCheck` from each member's ``[N, classes]`` validation probabilities
    (:attr:`MemberPredictor.probabilities`; the run's own network first) and the images' classes.

    Example:
        >>> labels = np.arange(40) % 2
        >>> right = np.eye(2)[labels]
        >>> wrong = right.copy(); wrong[:12] = 1 - wrong[:12]
        >>> check_partner({"whole_network": right, "truncation": wrong}, labels).kept
        False
        >>> check_partner({"whole_network": wrong, "truncation": right}, labels).kept
        True
    """
    from scipy.stats import binomtest

    labels = np.asarray(labels)
    (main, main_probabilities), (partner, partner_probabilities) = member_probabilities.items()
    main_probabilities, partner_probabilities = (
        np.asarray(main_probabilities),
        np.asarray(partner_probabilities),
    )
    main_right = main_probabilities.argmax(axis=1) == labels
    partner_right = partner_probabilities.argmax(axis=1) == labels
    average_right = (main_probabilities + partner_probabilities).argmax(axis=1) == labels
    rival = "average" if {main, partner} == AGAINST_THE_AVERAGE else "partner"
    rival_right = average_right if rival == "average" else partner_right
    only_main, only_rival = int(np.sum(main_right & ~rival_right)), int(np.sum(rival_right & ~main_right))
    discordant = only_main + only_rival
    p_value = binomtest(only_main, discordant, 0.5, alternative="greater").pvalue if discordant else 1.0
    return PartnerCheck(
        kept=bool(p_value >= PARTNER_SIGNIFICANCE),
        main=main,
        partner=partner,
        rival=rival,
        images=len(labels),
        main_correct=int(main_right.sum()),
        partner_correct=int(partner_right.sum()),
        average_correct=int(average_right.sum()),
        only_main=only_main,
        only_rival=only_rival,
        p_value=float(p_value),
    )
