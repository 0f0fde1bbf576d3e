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

import shutil
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import zip_longest
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


TRAINED_STATE = ("recipe.toml", "state.json", "history.csv", "checkpoints")  # what resume trains on from
RUN_RECORDS = ("run.json", "labels.txt", "dataset_card.json")  # ... and what it reads of the run


def join_runs(main: Path, partner: Path, run_dir: Path, selection: Path | None = None) -> Path:
    """A run folder in ``run_dir`` that averages two finished runs: ``main``'s trained network with
    ``partner``'s as its partner, left as an averaged ``fit`` is when a stop comes after both
    networks trained (their checkpoints and state, ``status`` "training"), so that resuming it
    evaluates, calibrates and saves the average as that fit does, without training again.

    ``compare`` uses it for an averaged pick: it trained the two recipes that fit trains (the same
    recipes, seed and split), each in its own run. ``selection`` (a ``selection.json``) is copied in
    beside them.
    """
    from transferkit.reporting import runfolder  # reporting.runfolder reads this module's names

    run_dir.mkdir(parents=True)
    for source, target, names in (
        (main, run_dir, TRAINED_STATE + RUN_RECORDS),
        (partner, partner_dir(run_dir), TRAINED_STATE),
    ):
        target.mkdir(exist_ok=True)
        for name in names:
            if (source / name).is_dir():
                shutil.copytree(source / name, target / name)
            elif (source / name).exists():
                shutil.copy2(source / name, target / name)
    if selection is not None and selection.exists():
        shutil.copy2(selection, run_dir / selection.name)
    joined = {"network": str(main), "partner": str(partner)}  # where each trained: their seconds are there
    runfolder.save_run_info(
        run_dir, {**runfolder.read_run_info(run_dir), "status": "training", "joined_from": joined}
    )
    return run_dir


def average_models(members: Mapping[str, keras.Model], temperature: float = 1.0) -> keras.Model:
    """One model taking the members' input and returning the mean of their probabilities.

    Each member is wrapped under its own name (``members``' keys), so that two members built
    from the same backbone (the same layer names inside) save and load as one ``model.keras``.

    Where the two bases start with the same layers and weights (a truncation and the frozen base
    up to the cut: both frozen, loaded from one file; a whole network and its truncation up to the
    frozen stem), those layers run once (:func:`shared_trunk`): beside the frozen base the model
    costs what the frozen base does, not about twice it. The members are then each network's own
    layers above the shared ones, wrapped under its name; :func:`members_of` rebuilds each as a
    whole classifier.

    With a ``temperature`` (other than 1) it returns ``softmax(log(mean) / temperature)``, which
    ranks the classes as the mean does: the two members give log-probabilities
    (:func:`log_probability_member`), ``log(p + q) = log p + softplus(log q - log p)`` (the 1/2 of
    the mean cancels in the softmax), then a ``Rescaling`` by ``1 / temperature`` and a softmax.
    Every layer is Keras' own: the model loads in safe mode without transferkit and converts to
    TFLite and ONNX as the plain average does.
    """
    first = next(iter(members.values()))
    pixels = keras.Input(first.input_shape[1:], dtype=first.inputs[0].dtype, name="pixels")
    log_probabilities = temperature != 1.0
    if log_probabilities and len(members) != 2:
        raise ValueError(f"a temperature averages two members' log-probabilities, not {len(members)}")
    trunk = shared_trunk(members)
    if trunk is not None:
        outputs = trunk.outputs_on(pixels, log_probabilities)
    elif log_probabilities:
        outputs = [log_probability_member(m, name)(pixels) for name, m in members.items()]
    else:
        outputs = [keras.Model(m.inputs, m.outputs[0], name=name)(pixels) for name, m in members.items()]
    if not log_probabilities:
        averaged = keras.layers.Average(name="mean_probabilities", dtype="float32")(outputs)
        return keras.Model(pixels, averaged, name=AVERAGED_NAME)
    log_p, log_q = outputs
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
    # The tensor the head was called on in the classifier's graph: a nested model's own ``input`` is
    # its inner one, and training calls the head in graphs of its own too (head phases).
    (node,) = (n for n in head._inbound_nodes if any(t is member.outputs[0] for t in n.output_tensors))
    return keras.Model(member.inputs, _head_output(head, node.input_tensors[0], True), name=name)


def _head_output(head: keras.Model, features, log_probabilities: bool):
    """``head`` on ``features``: its probabilities, or (``log_probabilities``) its layers up to the
    softmax layer's input, then a log-softmax ``Dense`` with that layer's weights (copied)."""
    if not log_probabilities:
        return head(features)
    dense = head.get_layer(SOFTMAX_LAYER)
    hidden = keras.Model(head.inputs, dense.input, name="head_features")(features)
    logits = keras.layers.Dense(
        dense.units, activation="log_softmax", dtype="float32", name=LOG_PROBABILITIES
    )
    output = logits(hidden)
    logits.set_weights(dense.get_weights())
    return output


TRUNK_NAME = "shared_trunk"  # the early layers two averaged networks share
REST = "rest_of_base"  # a member's own base layers above the shared trunk (where it has any)


@dataclass(frozen=True)
class _Graph:
    """A base's own graph: its layers in order, and what each reads and gives there (a layer's
    ``output`` is its first call's, and training calls the same layers in graphs of its own too)."""

    layers: list
    reads: dict[int, list]  # id(layer): the layers whose outputs it reads
    outputs: dict[int, object]  # id(layer): its output tensor

    @classmethod
    def of(cls, model: keras.Model) -> _Graph | None:
        """None where a layer is called twice in ``model`` (no backbone does)."""
        nodes = [node for depth in model._nodes_by_depth.values() for node in depth]
        if len({id(node.operation) for node in nodes}) != len(nodes):
            return None
        reads = {id(n.operation): [t._keras_history.operation for t in n.input_tensors] for n in nodes}
        return cls(list(model.layers), reads, {id(n.operation): n.output_tensors[0] for n in nodes})

    def output(self, name: str):
        return next(self.outputs[id(layer)] for layer in self.layers if layer.name == name)

    def block_ends(self) -> set[str]:
        """Layers whose output is the only tensor the layers after them read from the layers up to
        them (in the graph's order): where the graph can be cut in two."""
        position = {id(layer): i for i, layer in enumerate(self.layers)}
        last_read = list(range(len(self.layers)))  # by position: the last position reading its output
        for i, layer in enumerate(self.layers):
            for maker in self.reads[id(layer)]:
                last_read[position[id(maker)]] = max(last_read[position[id(maker)]], i)
        ends, reach = set(), 0
        for k, layer in enumerate(self.layers):
            if reach <= k and k > 0:
                ends.add(layer.name)
            reach = max(reach, last_read[k])
        return ends


@dataclass(frozen=True)
class _Chain:
    """A transferkit classifier's top-level layers: ``below`` its base (the pixel normalisation),
    the ``base`` (a nested model ending in a 4-D map, and its ``graph``), ``above`` it (pooling, then
    the head)."""

    below: list
    base: keras.Model
    graph: _Graph
    above: list

    @classmethod
    def of(cls, model: keras.Model) -> _Chain | None:
        layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        nested = [i for i, layer in enumerate(layers) if isinstance(layer, keras.Model)]
        if len(model.inputs) != 1 or len(nested) < 2 or layers[-1].name != HEAD_LAYER:
            return None
        base = layers[nested[0]]  # the head (and a pooling of several parts) come after it
        graph = _Graph.of(base)
        if len(base.outputs) != 1 or len(base.outputs[0].shape) != 4 or graph is None:
            return None
        return cls(layers[: nested[0]], base, graph, layers[nested[0] + 1 :])


@dataclass(frozen=True)
class SharedTrunk:
    """Two members whose bases compute the same, layer by layer, up to a block end (a layer whose
    output is all that the layers above it read): a truncation and the frozen base up to the cut, a
    whole network and a truncation up to the frozen stem."""

    chains: dict[str, _Chain]  # each member's chain, in the members' order; the first's layers run
    ends: dict[str, str]  # each member's name for the last shared layer (automatic names differ)

    def outputs_on(self, pixels, log_probabilities: bool) -> list:
        """Each member's output on ``pixels``: the shared layers run once (the first member's), then
        each member's own base layers above them, pooling and head."""
        (first, chain), *_ = self.chains.items()
        x = pixels
        for layer in chain.below:
            x = layer(x)
        end = chain.graph.output(self.ends[first])
        shared = keras.Model(chain.base.input, end, name=TRUNK_NAME)(x, training=False)  # BatchNorm frozen
        return [
            _above(each, self.ends[name], shared, name, log_probabilities)
            for name, each in self.chains.items()
        ]


def shared_trunk(members: Mapping[str, keras.Model]) -> SharedTrunk | None:
    """The two members' :class:`SharedTrunk`, or None where they share nothing: anything but two
    classifiers with the same pixel normalisation whose bases start with the same layers (the same
    kind, settings and weights, on the same inputs) up to a block end."""
    if len(members) != 2:
        return None
    chains = {name: _Chain.of(member) for name, member in members.items()}
    if any(chain is None for chain in chains.values()):
        return None
    a, b = chains.values()
    if not all(_same(x, y) for x, y in zip_longest(a.below, b.below)):
        return None
    ends_a, ends_b, end = a.graph.block_ends(), b.graph.block_ends(), None
    for layer, twin in _twins(a.graph, b.graph):
        end = (layer.name, twin.name) if layer.name in ends_a and twin.name in ends_b else end
    return None if end is None else SharedTrunk(chains, dict(zip(chains, end, strict=True)))


def _twins(a: _Graph, b: _Graph) -> list[tuple]:
    """``a``'s layers in graph order, each with the layer of ``b`` that computes the same from the
    same inputs, up to the first that has none. Paired by the graph, not by name: layers Keras names
    itself (``conv2d_3``) are named anew in every model built."""
    twin = {id(a.layers[0]): b.layers[0]}  # the inputs
    readers = defaultdict(list)  # b's layers by the layers they read
    for layer in b.layers[1:]:
        readers[tuple(id(maker) for maker in b.reads[id(layer)])].append(layer)
    pairs = []
    for layer in a.layers[1:]:
        inputs = tuple(id(twin.get(id(maker))) for maker in a.reads[id(layer)])
        match = next((other for other in readers.get(inputs, ()) if _same(layer, other)), None)
        if match is None:
            break
        readers[inputs].remove(match)  # two alike layers on one input (branches) pair one to one
        twin[id(layer)] = match
        pairs.append((layer, match))
    return pairs


def _same(layer, twin) -> bool:
    """Whether two layers compute the same at inference: of one kind, with the same settings (their
    names and what only training uses aside) and equal weights."""
    if type(layer) is not type(twin):
        return False
    aside = {"name": None, "trainable": None, "momentum": None}
    if {**layer.get_config(), **aside} != {**twin.get_config(), **aside}:
        return False
    if len(layer.weights) != len(twin.weights):
        return False
    return all(np.array_equal(w, t) for w, t in zip(layer.get_weights(), twin.get_weights(), strict=True))


def _above(chain: _Chain, end: str, shared_map, name: str, log_probabilities: bool):
    """The member's layers above the shared trunk on ``shared_map``, wrapped under its name: the rest
    of its base (where its base goes on past ``end``), its pooling and its head."""
    inputs = keras.Input(shared_map.shape[1:], dtype=shared_map.dtype, name=f"{name}_map")
    x, base = inputs, chain.base
    if base.outputs[0]._keras_history.operation.name != end:
        rest = keras.Model(chain.graph.output(end), base.outputs[0], name=REST)
        x = rest(x, training=False)
    for layer in chain.above[:-1]:
        x = layer(x)
    return keras.Model(inputs, _head_output(chain.above[-1], x, log_probabilities), name=name)(shared_map)


def members_of(model: keras.Model) -> dict[str, keras.Model]:
    """``{name: member}`` of a model made by :func:`average_models` (loaded or not), each a
    classifier of its own giving its probabilities (a calibrated average's members, which give
    log-probabilities, wrapped; members above a shared trunk rebuilt on it); {} otherwise."""
    if model.name != AVERAGED_NAME:
        return {}
    members = {layer.name: layer for layer in model.layers if isinstance(layer, keras.Model)}
    trunk = members.pop(TRUNK_NAME, None)
    if trunk is None:
        return {name: _probabilities(member, member) for name, member in members.items()}
    return {name: _on_trunk(model, trunk, name) for name in members}


def _on_trunk(model: keras.Model, trunk: keras.Model, name: str) -> keras.Model:
    """Member ``name`` of an average over a shared trunk as a classifier of its own: pixels -> the
    layers below the trunk -> a base (the trunk and the rest of the member's base) -> its pooling
    and head, so that the base's output is its last feature map (Grad-CAM explains it)."""
    above = model.get_layer(name)
    layers = [layer for layer in above.layers if not isinstance(layer, keras.layers.InputLayer)]
    feature_map = trunk.outputs[0]
    if layers[0].name == REST:
        feature_map = layers.pop(0)(feature_map, training=False)
    pixels = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name="pixels")
    x = pixels
    for layer in model.layers[1 : model.layers.index(trunk)]:  # the pixel normalisation
        x = layer(x)
    x = keras.Model(trunk.input, feature_map, name=f"{name}_base")(x, training=False)
    for layer in layers:
        x = layer(x)
    return _probabilities(keras.Model(pixels, x, name=name), above)


def _probabilities(member: keras.Model, last: keras.Model) -> keras.Model:
    """``member`` giving probabilities: itself, or, where its ``last`` layers end in log-probabilities,
    with ``exp`` on top."""
    if last.layers[-1].name != LOG_PROBABILITIES:
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
