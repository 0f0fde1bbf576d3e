"""Recipes: what to train, in which order, as frozen dataclasses loaded from TOML.

A recipe file is complete (no inheritance) and at most two levels deep: top-level keys, the
``[backbone] [head] [augment] [data]`` tables and a ``[[phases]]`` list. Unknown keys and bad
values are errors that name the valid choices. The resolved recipe is written into every run
folder, so ``transferkit fit --recipe runs/x/recipe.toml`` reproduces a run.

Example:
    >>> from transferkit.recipes import load_builtin, with_overrides
    >>> recipe = with_overrides(load_builtin("small_similar"), backbone="tiny", epochs=1)
    >>> [phase.train for phase in recipe.phases]
    ['head']
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from transferkit.data.cache_budget import is_memory_size
from transferkit.errors import TransferkitError, choices_error, setting
from transferkit.selection.quadrants import STRATEGIES as QUADRANT_STRATEGIES

STRATEGIES = tuple(dict.fromkeys(QUADRANT_STRATEGIES.values()))  # freeze, truncate, fine_tune, retrain
TRAIN_PARTS = ("head", "top", "all")
FILL_MODES = ("constant", "reflect", "nearest")
FLIPS = ("none", "horizontal", "vertical", "both")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "one_cycle")  # see training.optimizers
CLASS_WEIGHTS = ("none", "balanced", "auto")  # "auto": balanced when the classes are imbalanced
AUTO_LEARNING_RATE = "auto"  # a phase's learning_rate found by the range test (training.lr_find)
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")  # "auto": see training.device
DISTRIBUTIONS = ("auto", "none", "mirrored", "multi-worker")  # see training.distribute
POOLINGS = ("avg", "avg_max", "avg_dev", "pyramid")  # how the head pools the map: training.pooling
HEAD_INITS = ("random", "logistic")  # where the head starts: training.head_init
CALIBRATIONS = ("temperature", "none")  # the probabilities after training: training.calibration
RECIPE_PACKAGE = "transferkit.builtin_recipes"  # the top-level recipes/ folder, mapped in by setup.cfg


@dataclass(frozen=True)
class BackboneConfig:
    name: str = "mobilenet_v2_torchvision"
    weights: str = "imagenet"  # "imagenet" | "random" | path to .weights.h5 / .h5
    image_size: int = 0  # 0 = the backbone's default size
    cut: str = "none"  # "none" | "auto" (measured by the selector) | a cut-point layer name


@dataclass(frozen=True)
class HeadConfig:
    dropout: float = 0.2
    pooling: str = "avg"  # one of POOLINGS; richer modes keep more of a truncated base's narrow map
    init: str = "random"  # one of HEAD_INITS; "logistic": a fitted logistic regression (training.head_init)
    label_smoothing: float = 0.0
    # one of CALIBRATIONS: "temperature" fits one temperature to the validation images' likelihood
    # after training and folds it into the softmax layer (training.calibration); "none" leaves it.
    calibration: str = "temperature"


@dataclass(frozen=True)
class AugmentConfig:
    flip: str = "horizontal"
    rotation_degrees: float = 15.0
    zoom: float = 0.1  # scale factor range 1 +/- zoom
    translation: float = 0.1  # fraction of the image size
    contrast: float = 0.1
    # Gaussian pixel noise after the warp and contrast: each image's standard deviation is drawn
    # from [0, noise], in 0-255 units (0 = off). For models whose inputs will carry camera, scanner
    # or compression noise that the training images lack (clean renders): see the robustness
    # figure in metrics.json. With `measure`, the check measures the warps without it, and the noise
    # stands in for the warps where it drops them (the head trains on noise-only passes).
    noise: float = 0.0
    fill_mode: str = "reflect"
    cached_passes: int = 4  # augmented feature passes cached for frozen-base phases (0 = no augmentation)
    # true: the first frozen-base phase measures whether augmentation helps (training.augment_check)
    # and the run keeps it only if it does; false: always augment.
    measure: bool = False
    # Phases that train the base (not head phases on cached features) mix pairs of images and their
    # labels with Keras' MixUp (weights from Beta(alpha, alpha)) or CutMix (a pasted box, Beta(alpha,
    # alpha) area); 0 = off. Both on: each batch gets one, CutMix or MixUp at even odds (timm's
    # switch). See training.mixing.
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    validation_split: float = 0.2
    test_split: float = 0.15  # held out first when the data has no test split; 0 = none
    batch_size: int = 32
    # "balanced": each class weighs in inversely to its training count; "auto": balanced when the
    # largest/smallest class ratio reaches selection.rules.IMBALANCE_WARNING; "none": equal weights.
    class_weight: str = "none"
    # Memory the caches (decoded images, cached features) may use before they spill to files in
    # the run folder: "auto" (from the machine's memory) or a size, e.g. "2GB" (data.cache_budget).
    cache_memory: str = "auto"


@dataclass(frozen=True)
class Phase:
    """One stage of training, named in plain words.

    ``train`` is what learns: ``"head"`` (base frozen), ``"top"`` (the last ``top_blocks``
    blocks of the base, or every block from ``unfreeze_from`` on, plus the head) or ``"all"``.

    The optimizer is AdamW (:mod:`transferkit.training.optimizers`): ``weight_decay`` is its
    decoupled decay (0 = Adam); ``lr_decay_per_block`` gives discriminative rates: the head
    learns at ``learning_rate``, the base's top block at this factor times it, the block below at
    the factor squared, and so on down (1 = one rate everywhere); blocks whose factor would fall
    below ``min_block_lr_factor`` stay frozen (they would barely move, and their backward pass is
    the costliest of a step). ``frozen_input_stride`` keeps the stem frozen by resolution instead of
    by rate: every block whose input is the image (stride 1) or a map at most that many times
    smaller a side stays frozen (2 on MobileNetV2: ``Conv1`` to ``block_1``, the layers that run at
    full and half resolution; 4, the large recipes': to ``block_3``; 0 = none). ``learning_rate =
    "auto"`` runs the learning-rate range test at the start of the phase and records the rate it
    chose in the run folder's ``recipe.toml``. ``schedule``: ``constant``, ``cosine``,
    ``warmup_cosine`` (linear warm-up over ``warmup_epochs``, then cosine) or ``one_cycle``.
    Progressive resizing (phases that train the base): the first ``low_res_fraction`` of the
    epochs train on images scaled to ``low_res_scale`` of the size (a quarter of the pixels at
    0.5) but at least ``low_res_min_side`` pixels, the rest at full size; validation is always
    at full size. Off in every built-in recipe: with half the epochs at half the side,
    ``large_similar`` (tuning sets, 150 per class, seed 0, test split) kept icon themes at 224 px
    (0.625 -> 0.636, the phase 208 s -> 137 s) but lost typefaces at 224 px (0.852 -> 0.648) and
    everything at 96 px (48 px: icon themes 0.659 -> 0.523, typefaces 0.625 -> 0.455,
    Animal-MNIST 0.933 -> 0.907).

    ``from_image_size`` / ``below_image_size`` (pixels, 0 = no bound) make a phase apply only to
    runs at that image size or larger / smaller: a recipe can train differently at full resolution
    than on small images, in phases of one name whose size ranges do not overlap. The recipe a run
    trains (and writes into its run folder) holds only the phases of its size, without the bounds
    (:func:`for_image_size`).
    """

    name: str
    train: str = "head"
    epochs: int = 10
    learning_rate: float | str = 1e-3  # or "auto"
    top_blocks: int = 2
    unfreeze_from: str = ""  # a layer name; unfreezing starts at the beginning of its block
    train_batchnorm: bool = False  # BatchNorm stays in inference mode unless a phase opts in
    schedule: str = "constant"
    warmup_epochs: float = 1.0  # warmup_cosine only
    weight_decay: float = 0.0
    lr_decay_per_block: float = 1.0
    min_block_lr_factor: float = 0.0  # blocks whose layer-wise factor falls below this stay frozen
    frozen_input_stride: int = (
        0  # blocks taking maps at this stride of the image or finer stay frozen; 0 = none
    )
    patience: int = 0  # early stopping on val_loss after this many epochs without improvement; 0 = off
    low_res_fraction: float = 0.0  # progressive resizing: this share of the epochs trains on smaller images
    low_res_scale: float = 0.5  # ... at this fraction of the image size (each side)
    low_res_min_side: int = 112  # ... but never below this many pixels (none at all if that is the size)
    from_image_size: int = 0  # the phase applies from this image side on (pixels; 0 = any size)
    below_image_size: int = 0  # ... and only below this side (0 = any size)

    def applies_at(self, image_size: int) -> bool:
        """Whether this phase trains in a run at ``image_size`` pixels."""
        return image_size >= self.from_image_size and not 0 < self.below_image_size <= image_size

    def overlaps(self, other: Phase) -> bool:
        """Whether some image size runs both this phase and ``other``."""
        low = max(self.from_image_size, other.from_image_size)
        highs = [side for side in (self.below_image_size, other.below_image_size) if side]
        return not highs or low < min(highs)


@dataclass(frozen=True)
class Recipe:
    name: str
    strategy: str
    description: str = ""
    seed: int = 1337
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    phases: tuple[Phase, ...] = ()


_CHOICES = {
    ("Recipe", "strategy"): STRATEGIES,
    ("Phase", "train"): TRAIN_PARTS,
    ("Phase", "schedule"): SCHEDULES,
    ("AugmentConfig", "fill_mode"): FILL_MODES,
    ("AugmentConfig", "flip"): FLIPS,
    ("HeadConfig", "pooling"): POOLINGS,
    ("HeadConfig", "init"): HEAD_INITS,
    ("HeadConfig", "calibration"): CALIBRATIONS,
    ("DataConfig", "class_weight"): CLASS_WEIGHTS,
}


def _build(cls: type, data: Any, where: str) -> Any:
    """Construct dataclass ``cls`` from a TOML table, checking keys, types and choices.

    ``where``: the table's key path in the recipe (``"data"``, ``"phases[0]"``; ``""`` at the top).
    """
    if not isinstance(data, dict):
        raise TransferkitError(f"{_at(where)}expected a table, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TransferkitError(f"{_at(where)}unknown key {unknown[0]!r}. Valid keys: {', '.join(fields)}.")
    missing = [n for n, f in fields.items() if n not in data and _no_default(f)]
    if missing:
        raise TransferkitError(f"{_at(where)}missing required key {missing[0]!r}.")
    values = {name: _convert(hints[name], value, _key(where, name)) for name, value in data.items()}
    for (owner, name), valid in _CHOICES.items():
        if owner == cls.__name__ and name in values and values[name] not in valid:
            raise TransferkitError(f"{_at(_key(where, name))}{choices_error('value', values[name], valid)}")
    return cls(**values)


def _key(where: str, name: str) -> str:
    """The key path of ``name`` in the table at ``where``."""
    return f"{where}.{name}" if where else name


def _at(where: str) -> str:
    """An error's lead naming the key path ``where`` (nothing at the top of the recipe)."""
    return f"{where}: " if where else ""


def _no_default(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _convert(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if typing.get_origin(hint) is tuple:  # tuple[Phase, ...]
        if not isinstance(value, list):
            raise TransferkitError(f"{_at(where)}expected a list of tables ([[{where.split('.')[-1]}]]).")
        item = typing.get_args(hint)[0]
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(hint, types.UnionType):  # e.g. float | str: the first member the value fits
        for member in typing.get_args(hint):
            try:
                return _convert(member, value, where)
            except TransferkitError:
                pass
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    expected = hint if isinstance(hint, type) else type(None)
    if isinstance(hint, types.UnionType) or type(value) is not expected:
        raise TransferkitError(f"{_at(where)}expected {getattr(hint, '__name__', hint)}, got {value!r}.")
    return value


def validate(recipe: Recipe, source: str | None = None) -> Recipe:
    """Check the value ranges a TOML type check cannot; returns the recipe unchanged.

    ``source``: the file the recipe came from, named in the error (None: the recipe's ``name``,
    which a copied file keeps, so a file's own errors name the file).
    """
    problems = []
    if not recipe.phases:
        problems.append("needs at least one [[phases]] entry")
    for i, phase in enumerate(recipe.phases):
        if phase.epochs < 1:
            problems.append(f"phases[{i}].epochs must be >= 1 (got {phase.epochs})")
        problems += _phase_problems(f"phases[{i}]", phase)
        if phase.top_blocks < 1:
            problems.append(f"phases[{i}].top_blocks must be >= 1 (got {phase.top_blocks})")
    for i, phase in enumerate(recipe.phases):
        twin = next((j for j, other in enumerate(recipe.phases[:i]) if other.name == phase.name), None)
        if twin is not None and phase.overlaps(recipe.phases[twin]):
            problems.append(
                f"phases[{i}].name {phase.name!r} repeats phases[{twin}]'s: each phase needs its own "
                "(the history, the report and lr-find --phase name phases by it), unless the two "
                "apply to image sizes that do not overlap (from_image_size, below_image_size)"
            )
    if not 0 <= recipe.seed < 2**32:  # what NumPy's and Keras' global seeds take
        problems.append(f"seed must be in [0, 2**32) (got {recipe.seed}); e.g. 1337")
    if not 0 <= recipe.head.dropout < 1:
        problems.append(f"head.dropout must be in [0, 1) (got {recipe.head.dropout})")
    if not 0 <= recipe.head.label_smoothing < 1:
        problems.append(
            f"head.label_smoothing must be in [0, 1) (got {recipe.head.label_smoothing}); e.g. 0.1"
        )
    problems += _augment_problems(recipe.augment)
    problems += _data_problems(recipe.data)
    if recipe.backbone.image_size < 0 or 0 < recipe.backbone.image_size < 8:
        problems.append(
            f"backbone.image_size must be 0 (the backbone's default) or >= 8 pixels "
            f"(got {recipe.backbone.image_size}); e.g. 224"
        )
    if recipe.strategy == "truncate" and recipe.backbone.cut == "none":
        problems.append('strategy "truncate" needs backbone.cut = "auto" or a cut-point layer name')
    elif recipe.strategy != "truncate" and recipe.backbone.cut != "none":
        problems.append(
            f'backbone.cut applies only to strategy "truncate" (got cut = {recipe.backbone.cut!r} with '
            f'strategy {recipe.strategy!r}); remove it or set cut = "none"'
        )
    if problems:
        raise TransferkitError(_invalid(recipe.name, source) + "; ".join(problems) + ".")
    return recipe


def _augment_problems(augment: AugmentConfig) -> list[str]:
    """The ``[augment]`` values out of range (see :class:`transferkit.training.augment.RandomAffine`)."""
    problems = []
    if not 0 <= augment.rotation_degrees <= 180:  # drawn from [-x, x] degrees: 180 is every angle
        problems.append(
            f"augment.rotation_degrees must be in [0, 180], 0 = off (got {augment.rotation_degrees}); e.g. 15"
        )
    if not 0 <= augment.zoom < 1:  # the scale is drawn from [1 - zoom, 1 + zoom]: it must stay above 0
        problems.append(f"augment.zoom must be in [0, 1), 0 = off (got {augment.zoom}); e.g. 0.1")
    if not 0 <= augment.translation < 1:  # a fraction of the image size
        problems.append(
            f"augment.translation must be in [0, 1), 0 = off (got {augment.translation}); e.g. 0.1"
        )
    if not 0 <= augment.contrast <= 1:  # the factor is drawn from [1 - contrast, 1 + contrast]
        problems.append(f"augment.contrast must be in [0, 1], 0 = off (got {augment.contrast}); e.g. 0.1")
    if not 0 <= augment.noise <= 64:  # 0-255 units; a quarter of the range hides most images
        problems.append(f"augment.noise must be in [0, 64], 0 = off (got {augment.noise}); e.g. 4")
    if augment.cached_passes < 0:
        problems.append(
            f"augment.cached_passes must be >= 0, 0 = no augmentation (got {augment.cached_passes}); e.g. 4"
        )
    for key in ("mixup_alpha", "cutmix_alpha"):  # Keras' MixUp and CutMix take alphas in [0, 1]
        alpha = getattr(augment, key)
        if not 0 <= alpha <= 1:
            problems.append(f"augment.{key} must be in [0, 1], 0 = off (got {alpha}); e.g. 0.2")
    return problems


def _data_problems(data: DataConfig) -> list[str]:
    """The ``[data]`` values out of range."""
    problems = []
    if not 0 < data.validation_split < 1:
        problems.append(f"data.validation_split must be in (0, 1) (got {data.validation_split})")
    if not 0 <= data.test_split < 1:
        problems.append(f"data.test_split must be in [0, 1), 0 = none (got {data.test_split})")
    elif 0 < data.validation_split < 1 and not data.validation_split + data.test_split < 1:
        problems.append(
            "data.validation_split + data.test_split must be under 1, to leave images to train on "
            f"(got {data.validation_split} + {data.test_split}); e.g. 0.2 + 0.15"
        )
    if data.batch_size < 1:
        problems.append(f"data.batch_size must be >= 1 (got {data.batch_size})")
    if not is_memory_size(data.cache_memory):
        problems.append(f'data.cache_memory must be "auto" or a size like "2GB" (got {data.cache_memory!r})')
    return problems


def _phase_problems(where: str, phase: Phase) -> list[str]:
    """The optimizer and schedule settings of one phase that are out of range."""
    problems = []
    rate = phase.learning_rate
    if isinstance(rate, str) and rate != AUTO_LEARNING_RATE:
        problems.append(f'{where}.learning_rate must be a number or "{AUTO_LEARNING_RATE}" (got {rate!r})')
    elif not isinstance(rate, str) and not 0 < rate < 1:
        problems.append(f"{where}.learning_rate must be in (0, 1) (got {rate})")
    if not 0 <= phase.min_block_lr_factor < 1:
        problems.append(f"{where}.min_block_lr_factor must be in [0, 1) (got {phase.min_block_lr_factor})")
    if phase.frozen_input_stride < 0:
        problems.append(
            f"{where}.frozen_input_stride must be >= 0, 0 = none (got {phase.frozen_input_stride}); e.g. 2"
        )
    if not 0 <= phase.weight_decay < 1:
        problems.append(f"{where}.weight_decay must be in [0, 1) (got {phase.weight_decay})")
    if not 0 < phase.lr_decay_per_block <= 1:
        problems.append(f"{where}.lr_decay_per_block must be in (0, 1] (got {phase.lr_decay_per_block})")
    if phase.patience < 0:
        problems.append(f"{where}.patience must be >= 0, 0 = off (got {phase.patience}); e.g. 10")
    if phase.warmup_epochs < 0:  # longer than the phase: the warm-up takes all but its last step
        problems.append(f"{where}.warmup_epochs must be >= 0 (got {phase.warmup_epochs})")
    if not 0 <= phase.low_res_fraction < 1:
        problems.append(f"{where}.low_res_fraction must be in [0, 1), 0 = off (got {phase.low_res_fraction})")
    elif phase.low_res_fraction and phase.train == "head":
        problems.append(
            f"{where}.low_res_fraction applies to phases that train the base; a head phase trains on "
            'cached features (remove the key or set train = "all")'
        )
    if not 0 < phase.low_res_scale <= 1:
        problems.append(f"{where}.low_res_scale must be in (0, 1] (got {phase.low_res_scale}); e.g. 0.5")
    if phase.low_res_min_side < 8:
        problems.append(f"{where}.low_res_min_side must be >= 8 pixels (got {phase.low_res_min_side})")
    if phase.from_image_size < 0 or phase.below_image_size < 0:
        problems.append(
            f"{where}.from_image_size and below_image_size must be >= 0 pixels, 0 = no bound "
            f"(got {phase.from_image_size} and {phase.below_image_size}); e.g. 160"
        )
    elif 0 < phase.below_image_size <= phase.from_image_size:
        problems.append(
            f"{where}.below_image_size must be above from_image_size, or 0 = no bound (got "
            f"{phase.below_image_size} <= {phase.from_image_size}): no image size would run the phase"
        )
    return problems


def low_res_epochs(phase: Phase, image_size: int) -> int:
    """How many of ``phase``'s first epochs train on smaller images at ``image_size`` (rounded half
    up; 0 where the floor ``low_res_min_side`` leaves nothing to shrink)."""
    if low_res_size(phase, image_size) >= image_size:
        return 0
    return math.floor(phase.epochs * phase.low_res_fraction + 0.5)


def low_res_size(phase: Phase, image_size: int) -> int:
    """The side of the smaller images ``phase`` starts on at ``image_size``."""
    return min(image_size, max(phase.low_res_min_side, round(image_size * phase.low_res_scale)))


def _invalid(name: object, source: str | None) -> str:
    """The lead of a recipe's error: its file where it came from one, else its name."""
    return f"Invalid recipe {source}: " if source is not None else f"Invalid recipe {name!r}: "


def loads(text: str, source: str | None = None) -> Recipe:
    """Parse and validate a recipe from TOML text; ``source``: its file, named in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise TransferkitError(f"{source or 'The recipe'} is not valid TOML: {error}.") from None
    try:
        recipe = _build(Recipe, data, "")
    except TransferkitError as error:
        name = data.get("name", "<unnamed>")
        raise TransferkitError(f"{_invalid(name, source)}{error}") from None
    return validate(recipe, source)


def load(path: str | Path) -> Recipe:
    """Load a recipe file (a built-in name like ``small_similar`` also works)."""
    path = Path(path)
    if not path.exists():
        if str(path) in builtin_names():
            return load_builtin(str(path))
        raise TransferkitError(
            f"No recipe {str(path)!r}: neither a built-in one nor a file. Give one of "
            f"{', '.join(builtin_names())} or the path of a .toml file."
        )
    return loads(path.read_text(encoding="utf-8"), source=str(path))


def builtin_names() -> list[str]:
    """Names of the recipes shipped with the package (the four quadrants)."""
    folder = resources.files(RECIPE_PACKAGE)
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_builtin(name: str) -> Recipe:
    """Load one of the shipped quadrant recipes by name."""
    if name not in builtin_names():
        raise choices_error("recipe", name, builtin_names())
    text = (resources.files(RECIPE_PACKAGE) / f"{name}.toml").read_text(encoding="utf-8")
    return loads(text, source=f"recipes/{name}.toml")


def checked(recipe: Recipe) -> Recipe:
    """A :class:`Recipe` built in Python, checked as a recipe file is: every key's type and range.

    Dataclasses do not check their fields' types, so ``Phase(epochs=2.5)`` would otherwise reach
    Keras mid-fit. Returns the recipe as TOML reads it back (equal to ``recipe`` when it is valid).
    """
    source = f"{recipe.name!r} (a Recipe object)"
    try:
        text = dumps(recipe)
    except (TypeError, ValueError) as error:  # a value TOML cannot hold (None, an array, an object)
        raise TransferkitError(f"{_invalid(recipe.name, source)}{error}.") from None
    return loads(text, source)


def dumps(recipe: Recipe) -> str:
    """Serialise a recipe to TOML that :func:`loads` reads back to an equal recipe."""
    data = dataclasses.asdict(recipe)
    phases = data.pop("phases")
    text = tomli_w.dumps(data)
    for phase in phases:
        text += "\n[[phases]]\n" + tomli_w.dumps(phase)
    return text


def with_overrides(recipe: Recipe, *, source: str | None = None, **overrides: Any) -> Recipe:
    """Apply the CLI's explicit overrides on top of a recipe; ``None`` values are ignored.

    Args:
        recipe: the recipe to change.
        source: the file ``recipe`` was loaded from, named in errors (see :func:`validate`).
        **overrides: any of ``backbone``, ``weights``, ``image_size``, ``cut`` (backbone table),
            ``batch_size``, ``validation_split``, ``test_split``, ``cache_memory`` (data table),
            ``seed``, and ``epochs``, which sets every phase's epoch count.

    Returns the recipe for its image size (:func:`for_image_size`: the recipe's ``image_size``,
    else the backbone's default), so the image size a run will use belongs in the same call: a
    recipe resolved at one size keeps that size's phases when another size is given later.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    table_keys = {
        "backbone": {"backbone": "name", "weights": "weights", "image_size": "image_size", "cut": "cut"},
        "data": {
            "batch_size": "batch_size",
            "validation_split": "validation_split",
            "test_split": "test_split",
            "cache_memory": "cache_memory",
        },
    }
    changes: dict[str, Any] = {}
    for table, keys in table_keys.items():
        updates = {field_name: overrides.pop(key) for key, field_name in keys.items() if key in overrides}
        if updates:
            changes[table] = dataclasses.replace(getattr(recipe, table), **updates)
    if "epochs" in overrides:
        epochs = overrides.pop("epochs")
        changes["phases"] = tuple(dataclasses.replace(p, epochs=epochs) for p in recipe.phases)
    if "seed" in overrides:
        changes["seed"] = overrides.pop("seed")
    if overrides:
        raise TransferkitError(f"Unknown override {sorted(overrides)[0]!r}.")
    data = changes.get("data", recipe.data)
    if "data" in changes and 0 <= data.test_split < 1 and data.validation_split + data.test_split >= 1:
        raise TransferkitError(
            f"A test split of {data.test_split:g} ({setting('test_split')}) leaves no images to train on "
            f"beside the validation split of {data.validation_split:g}: use one under "
            f"{1 - data.validation_split:g}, e.g. 0.15."
        )
    recipe = validate(dataclasses.replace(recipe, **changes), source)
    return for_image_size(recipe, _image_size(recipe.backbone)) if _sized(recipe) else recipe


def for_image_size(recipe: Recipe, image_size: int) -> Recipe:
    """The recipe a run at ``image_size`` pixels trains: its phases for that size, their bounds
    cleared (what the run folder's ``recipe.toml`` records, so it reproduces the run at any size).

    Example:
        >>> small = Phase("fine_tune", train="all", lr_decay_per_block=0.8, below_image_size=160)
        >>> full = Phase("fine_tune", train="all", lr_decay_per_block=0.9, from_image_size=160)
        >>> recipe = dataclasses.replace(load_builtin("large_similar"), phases=(small, full))
        >>> [p.lr_decay_per_block for p in for_image_size(recipe, 96).phases]
        [0.8]
        >>> [p.lr_decay_per_block for p in for_image_size(recipe, 224).phases]
        [0.9]
    """
    phases = tuple(
        dataclasses.replace(phase, from_image_size=0, below_image_size=0)
        for phase in recipe.phases
        if phase.applies_at(image_size)
    )
    if not phases:
        ranges = ", ".join(_size_range(phase) for phase in recipe.phases)
        raise TransferkitError(
            f"Recipe {recipe.name!r} has no phase for {image_size}-px images (its phases: {ranges}). "
            "Choose another --image-size or widen a phase's from_image_size / below_image_size."
        )
    return dataclasses.replace(recipe, phases=phases)


def _sized(recipe: Recipe) -> bool:
    """Whether any phase of ``recipe`` applies to some image sizes only."""
    return any(phase.from_image_size or phase.below_image_size for phase in recipe.phases)


def _image_size(backbone: BackboneConfig) -> int:
    """The side the images are resized to: the recipe's, else the backbone's default."""
    if backbone.image_size:
        return backbone.image_size
    from transferkit.backbones.registry import get_backbone  # imports Keras: only when a phase needs it

    return get_backbone(backbone.name).default_size


def _size_range(phase: Phase) -> str:
    """``'fine_tune' (from 160 px)``, ``'fine_tune' (below 160 px)``, ``'warmup' (any size)``."""
    bounds = [f"from {phase.from_image_size} px"] * bool(phase.from_image_size)
    bounds += [f"below {phase.below_image_size} px"] * bool(phase.below_image_size)
    return f"{phase.name!r} ({', '.join(bounds) or 'any size'})"
