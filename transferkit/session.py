"""The stages of one fit or resume: prepare (base, selection, trials, classifier, plan) -> train ->
evaluate on the held-out split -> report. :mod:`transferkit.api` runs them in order; the CLI and
``compare`` go through the API.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from transferkit import recipes as recipe_io
from transferkit.backbones.registry import BackboneSpec, get_backbone
from transferkit.backbones.weights import build_base
from transferkit.console import run_time, say
from transferkit.data.cache_budget import CacheBudget, budget_for_run
from transferkit.data.loading import DataSplits, load_data, make_dataset
from transferkit.fileio import write_json, write_text
from transferkit.recipes import Recipe
from transferkit.reporting import figures, runfolder
from transferkit.reporting.diagnostics import (
    PREDICTIONS_FILE,
    VALIDATION_PREDICTIONS_FILE,
    evaluate_held_out,
    load_predictions,
    record_held_out,
)
from transferkit.reporting.html import write_html_report
from transferkit.reporting.interpretation import write_interpretation
from transferkit.reporting.metrics import Metrics, compute_metrics, predict_dataset
from transferkit.reporting.robustness import Robustness, measure_robustness
from transferkit.selection.decision import Selection
from transferkit.selection.journal import SelectionJournal
from transferkit.selection.measure import ProbePass, probe_quadrant, size_figures
from transferkit.selection.trials import (
    TRIAL_BUDGET,
    Trials,
    candidates,
    over_budget,
    successive_halving,
    with_trials,
)
from transferkit.training import averaging
from transferkit.training.calibration import TemperatureFit, calibrate, scaled_probabilities
from transferkit.training.device import Device
from transferkit.training.distribute import (
    local_copy,
    peer_failures,
    remove_worker_dir,
    shard_by_example,
    weights_sha256,
)
from transferkit.training.feature_bank import (
    BankInputs,
    CleanFeatures,
    FeatureBank,
    FeatureView,
    build_feature_bank,
)
from transferkit.training.head_fit import fits_on_features, head_trial
from transferkit.training.head_phase import FirstPasses
from transferkit.training.model import build_classifier, truncate
from transferkit.training.progress import FitHooks
from transferkit.training.shared_passes import share_first_passes
from transferkit.training.timing import Stopwatch
from transferkit.training.trainable import plan_phase
from transferkit.training.trainer import Trainer, TrainState

# metrics.json's "scored" for the validation record (the test record's is the split's note)
VALIDATION_SCORED = "validation split: {n:,} images, watched by early stopping and any selection trials"


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` returns: the run folder, the trained model, its metrics and the plan it ran.

    ``metrics`` are measured on the held-out test split when there is one (``headline == "test"``),
    otherwise on the validation split that early stopping saw (``headline == "validation"``);
    ``validation_metrics`` are always the validation split's. ``robustness``: the headline split's
    accuracy under invisible pixel noise (:mod:`transferkit.reporting.robustness`). ``calibration``:
    the temperature fitted to the validation images and folded into ``model``, or why none was
    (:mod:`transferkit.training.calibration`); None where the recipe says ``calibration = "none"``.
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
    robustness: Robustness | None = None
    calibration: TemperatureFit | None = None
    resumed: bool = False  # a ``resume`` after a stop
    # Of ``seconds``, those the run had taken before its stop, up to its last saved progress; 0.0
    # where that is not known (``seconds`` then counts from the resume).
    seconds_before_stop: float = 0.0

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
        seconds = run_time(self.seconds, self.resumed, self.seconds_before_stop)
        return " | ".join([*parts, seconds, str(self.run_dir)])


def as_float(data: tf.data.Dataset) -> tf.data.Dataset:
    return data.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


def image_size_for(recipe: Recipe, spec: BackboneSpec) -> int:
    return recipe.backbone.image_size or spec.default_size


def with_image_size(recipe: Recipe, spec: BackboneSpec) -> Recipe:
    """``recipe`` with the image size it trains at written out (0 means the backbone's default), as
    the run folder's ``recipe.toml`` keeps it."""
    size = image_size_for(recipe, spec)
    if recipe.backbone.image_size == size:
        return recipe
    return dataclasses.replace(recipe, backbone=dataclasses.replace(recipe.backbone, image_size=size))


def load_splits(data: str, recipe: Recipe, strict: bool = False) -> DataSplits:
    """The recipe's splits of ``data``: test held out first (same seed, same split), then validation."""
    data_config = recipe.data
    return load_data(
        data,
        validation_split=data_config.validation_split,
        test_split=data_config.test_split,
        seed=recipe.seed,
        strict=strict,
    )


def planned(session: Session, started: float) -> FitResult:
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
class Session:
    recipe: Recipe
    spec: BackboneSpec
    classifier: object
    selection: object | None
    plan: tuple
    weights_source: str
    hooks: FitHooks = FitHooks()  # the app's callbacks and progress listener, the bars
    clean_features: CleanFeatures | None = None  # the trials' feature bank's, when they are this fit's
    stopwatch: Stopwatch = field(default_factory=Stopwatch, compare=False)  # the run's stage timings
    partner: Recipe | None = None  # a network trained beside the recipe's, the model averaging both


def prepare(
    recipe,
    splits: DataSplits,
    measure,
    size,
    similar,
    overrides,
    verbose,
    selection_mode: str = "fast",
    stopwatch: Stopwatch | None = None,
    journal: SelectionJournal | None = None,
) -> Session:
    """Build the base, measure the quadrant when asked (and settle a close call by trials), cut,
    add the head, plan the phases; each stage timed on ``stopwatch`` (the session keeps it).

    ``journal``: the run folder's record of the selection so far; what it holds (the measured
    decision, finished trials) is read back instead of done again, and what is done is added.
    """
    stopwatch = stopwatch or Stopwatch()
    spec = get_backbone(recipe.backbone.name)
    with stopwatch.stage("build base"):
        base, weights_source = build_base(spec, image_size_for(recipe, spec), recipe.backbone.weights)
    say(verbose, weights_source)
    selection, bank, probe = None, None, None
    if measure:
        selection = journal.selection() if journal is not None else None
        if selection is not None:
            say(verbose, f"Selection measured before the interruption: {selection.quadrant}")
        else:
            with stopwatch.stage("selection"):
                selection, probe = probe_quadrant(
                    splits, spec, base, recipe, size=size, similar=similar, verbose=verbose
                )
            if journal is not None:
                journal.record_selection(selection)
        # Averaging the pick with a partner network settles that call without trials.
        if selection_mode == "trial" and selection.close_call and selection.partner is None:
            with stopwatch.stage("trials"):
                selection, bank = settle_by_trials(
                    selection, recipe, splits, size, overrides, verbose, base, journal, probe
                )
            say(verbose, f"  - {selection.reasons[-1]}")  # what the trials decided, and why
        elif selection.close_call:  # say why no trials settle it
            if selection.partner is not None:
                why = f"close call, settled by averaging two networks ({selection.partner} beside): no trials"
            else:
                why = "close call, not trialled: selection 'fast' (asked for, a dry run, or several replicas)"
            selection = dataclasses.replace(selection, reasons=(*selection.reasons, why))
            say(verbose, f"  - {why}")
        recipe = recipe_io.with_overrides(
            recipe_io.load_builtin(selection.quadrant), seed=recipe.seed, **overrides
        )
    if recipe.backbone.cut == "auto":
        if selection is None or selection.cut_point is None:  # an explicit truncate recipe: measure the cut
            known_size = selection.size if selection is not None else (size if size != "auto" else "small")
            with stopwatch.stage("selection"):
                selection, probe = probe_quadrant(
                    splits, spec, base, recipe, size=known_size, similar=False, verbose=verbose
                )
        recipe = dataclasses.replace(
            recipe, backbone=dataclasses.replace(recipe.backbone, cut=selection.cut_point)
        )
    in_trials = bank is not None  # the trials' bank: its passes are the trials' time
    if bank is None and probe is not None:  # no trials: the selector's pass still serves the fit
        with stopwatch.stage("features"):
            bank = probe_bank(recipe, spec, splits, probe)
    # The classifier is built and trained from the seed, whatever the selector, its probes and any
    # trials drew before: a recipe trains the same model whether it was measured, trialled or given.
    keras.utils.set_random_seed(recipe.seed)
    session = assemble(recipe, spec, base, splits, selection, weights_source, verbose, stopwatch)
    clean = bank.features_for(recipe, bank_inputs(recipe, spec, splits)) if bank is not None else None
    if clean is not None:  # the fit trains on these passes instead of passing the images itself
        stopwatch.reuse("selection", bank.probe_seconds)
        if in_trials:
            stopwatch.reuse("trials", bank.pass_seconds)
    partner = None
    if selection is not None and selection.partner is not None:
        partner = averaging.partner_recipe(recipe, selection.partner, selection.partner_cut, overrides)
        at = f" at {partner.backbone.cut!r}" if partner.strategy == "truncate" else ""
        main = averaging.in_words(averaging.member_name(recipe))
        say(verbose, f"  then {partner.name} ({partner.strategy}{at}) in {averaging.PARTNER_DIR}/; the "
            f"model averages the two networks' probabilities, unless the {main} is clearly ahead on the "
            "validation images")  # fmt: skip
    return dataclasses.replace(session, clean_features=clean, partner=partner)


def assemble(
    recipe, spec, base, splits, selection, weights_source, verbose, stopwatch: Stopwatch | None = None
) -> Session:
    """Cut the base when the recipe truncates, add the head, plan the phases."""
    recipe = with_image_size(recipe, spec)
    stopwatch = stopwatch or Stopwatch()
    with stopwatch.stage("build classifier"):
        if recipe.strategy == "truncate":
            base = truncate(base, recipe.backbone.cut, spec.cut_points)
        train_bn = any(phase.train_batchnorm for phase in recipe.phases)
        classifier = build_classifier(
            spec, base, len(splits.class_names), recipe.head, batchnorm_inference=not train_bn
        )
        plan = tuple(plan_phase(classifier, spec, phase) for phase in recipe.phases)
    say(verbose, f"Recipe {recipe.name} ({recipe.strategy}) on {spec.name}:")
    for phase_plan in plan:
        say(verbose, "  " + phase_plan.describe())
    return Session(recipe, spec, classifier, selection, plan, weights_source, stopwatch=stopwatch)


def settle_by_trials(
    selection: Selection,
    recipe: Recipe,
    splits,
    size,
    overrides,
    verbose,
    base: keras.Model,
    journal: SelectionJournal | None = None,
    probe: ProbePass | None = None,
) -> tuple[Selection, FeatureBank | None]:
    """Train the close call's candidates briefly (successive halving) and keep the winner.

    One clean pass of the training and validation images through the pretrained ``base`` comes
    first (the feature bank, at every cut and pooling the candidates' heads read): head-only
    candidates train just a head on it, the others their head phase, and the final fit reuses it;
    its time counts as the trials'. The trials see the training and validation splits only: the
    held-out test split is dropped from the splits they are given. Candidates whose trial would
    cost more than the budget (:func:`~transferkit.selection.trials.over_budget`) are dropped
    first; when that leaves the pick alone, nothing runs and there is no bank (None). A trial
    ``journal`` holds is not trained again (its recorded result stands), and the bank is only
    computed for a trial that does train. Where the selector's ``probe`` passed every training
    image, the bank takes its features and passes only the validation images.
    """
    seen = dataclasses.replace(splits, test=None)
    options = candidates(selection, size_figures(splits), size_measured=size == "auto")

    def recipe_for(candidate) -> Recipe:
        builtin = recipe_io.load_builtin(candidate.quadrant)
        return recipe_io.with_overrides(builtin, seed=recipe.seed, cut=candidate.cut_point, **overrides)

    sizes = (len(seen.train), len(seen.val))
    costly = over_budget(options, recipe_for, sizes) if len(options) > 1 else ()
    if len(options) == 1:  # e.g. fine-tune against retrain (selection.trials.WHOLE_NETWORK_STRATEGIES)
        say(verbose, f"Close call, but {options[0].describe()} is the only candidate worth a trial")
    elif costly[:1] == options[:1]:  # the pick's own trial: nothing to compare the others with
        say(verbose, f"Close call, but a trial of the pick, {options[0].describe()}, would cost "
            f"over {TRIAL_BUDGET:.0%} of its own fit (image passes, set-up included): no trials")  # fmt: skip
    else:
        for candidate in costly:
            say(verbose, f"trial {candidate.describe()}: not run, it would cost more than {TRIAL_BUDGET:.0%} "
                f"of {options[0].describe()}'s own fit (counted in image passes)")  # fmt: skip
    if len(options) - len(costly) <= 1:  # the pick alone: nothing to compare it with, no bank needed
        trials = Trials(TRIAL_BUDGET, options, (), options[0], 0.0, skipped=costly)
        return with_trials(selection, trials), None
    options = tuple(c for c in options if c not in costly)
    say(verbose, f"Close call: trials of {', '.join(c.describe() for c in options)}")
    resuming = journal is not None and journal.has_trials()

    def make_bank() -> FeatureBank:
        return feature_bank(base, recipe, [recipe_for(c) for c in options], seen, verbose, probe)

    # A resumed run computes the bank only if a trial still has to train (its time then counts
    # in that trial's seconds, and in the trials' as always); a first run computes it up front.
    bank = None if resuming else make_bank()

    def trial(candidate_recipe: Recipe):
        nonlocal bank
        known = journal.trial(candidate_recipe) if journal is not None else None
        if known is not None:
            say(verbose, f"{candidate_recipe.name}: trained before the interruption, its result kept")
            return known
        if bank is None:
            bank = make_bank()
        result = train_trial(candidate_recipe, seen, bank, base)
        if journal is not None:
            journal.record_trial(candidate_recipe, result)
        return result

    trials = successive_halving(options, recipe_for, trial, sizes=sizes, verbose=verbose)
    bank_seconds = bank.seconds if bank is not None else 0.0
    outside = 0.0 if resuming else bank_seconds  # the up-front bank ran outside the halving's clock
    trials = dataclasses.replace(trials, skipped=(*costly, *trials.skipped))
    trials = dataclasses.replace(trials, seconds=trials.seconds + outside, bank_seconds=bank_seconds)
    return with_trials(selection, trials), bank


def bank_inputs(recipe: Recipe, spec: BackboneSpec, splits: DataSplits) -> BankInputs:
    """What ``recipe``'s clean features of ``splits`` are computed from (one replica's batches)."""
    size, batch = image_size_for(recipe, spec), recipe.data.batch_size
    return BankInputs(spec.name, recipe.backbone.weights, size, batch, splits.train, splits.val)


def probe_bank(
    recipe: Recipe, spec: BackboneSpec, splits: DataSplits, probe: ProbePass
) -> FeatureBank | None:
    """``recipe``'s clean features from the selector's pass where no trial made a feature bank: the
    training images' as the probe pooled them at the recipe's cut, and one pass of the validation
    images. The fit's first phase would make both itself (the training images' for its
    augmentation check). None where that phase does not train the head alone on the pretrained
    base, or the probe did not pass every training image at that cut and pooling."""
    if not recipe.phases or recipe.phases[0].train != "head":
        return None
    return probe.bank(
        [FeatureView.of(recipe)], probe_val_data(recipe, spec, splits), bank_inputs(recipe, spec, splits)
    )


def probe_val_data(recipe: Recipe, spec: BackboneSpec, splits: DataSplits) -> tf.data.Dataset:
    """The validation images in order as the probe's pass took the training images (uint8 batches
    of the recipe's size): another dtype would trace its pass again (0.6-0.8 s of MobileNetV2 at 224 px)."""
    return make_dataset(splits.val, image_size_for(recipe, spec), recipe.data.batch_size, cache=False)


def feature_bank(
    base, recipe: Recipe, options: list[Recipe], splits: DataSplits, verbose, probe: ProbePass | None = None
) -> FeatureBank:
    """The clean features of ``splits`` through ``base`` for every option's head, from the very
    datasets (same images, order and batches) :func:`make_trainer` gives a fit; the training
    images' from the selector's ``probe`` where it passed them all at those cuts and poolings."""
    spec = get_backbone(recipe.backbone.name)
    _, val, ordered = datasets_for(recipe, spec, splits)
    views = list(dict.fromkeys(FeatureView.of(option) for option in options))
    inputs = bank_inputs(recipe, spec, splits)
    bank = probe.bank(views, probe_val_data(recipe, spec, splits), inputs) if probe is not None else None
    if bank is not None:
        say(verbose, f"Feature bank: {len(bank.views)} cut(s) and pooling(s) from the probe's pass, "
            f"the validation images passed, {bank.seconds:.1f} s")  # fmt: skip
        return bank
    bank = build_feature_bank(base, spec, views, ordered, val, inputs, verbose=verbose)
    say(verbose, f"Feature bank: {len(bank.views)} cut(s) and pooling(s), one pass, {bank.seconds:.1f} s")
    return bank


def train_trial(
    recipe: Recipe, splits: DataSplits, bank: FeatureBank | None = None, pretrained: keras.Model | None = None
) -> tuple[float, int, np.ndarray]:
    """Train ``recipe`` from the pretrained weights: (validation accuracy, epochs, hits).

    ``hits`` says for each validation image, in the split's order, whether the trained model
    classifies it right (the trials compare candidates image by image). A recipe that trains its
    head alone is trained on ``bank``'s features, nothing written. Any other is built anew and
    trained in a temporary folder; when ``bank`` holds its features its base takes the
    ``pretrained`` base's weights (the ones the bank saw) and its head phase trains on them; the
    weights it ends with (early stopping restores the best) are scored by one more pass over the
    validation images, through the steps the run traced.
    """
    spec = get_backbone(recipe.backbone.name)
    clean = bank.features_for(recipe, bank_inputs(recipe, spec, splits)) if bank is not None else None
    if clean is not None and fits_on_features(recipe):
        hits, epochs = head_trial(recipe, clean, len(splits.class_names))
        return float(np.mean(hits)), epochs, hits
    keras.utils.set_random_seed(recipe.seed)  # each trial as if it were the run: same seed, any order
    base, weights_source = build_base(spec, image_size_for(recipe, spec), recipe.backbone.weights)
    if clean is not None and pretrained is not None:
        base.set_weights(pretrained.get_weights())
    else:
        clean = None
    session = assemble(recipe, spec, base, splits, None, weights_source, verbose=0)
    session = dataclasses.replace(session, clean_features=clean)
    with tempfile.TemporaryDirectory(prefix="transferkit-trial-") as scratch:
        trainer = make_trainer(session, splits, Path(scratch), verbose=0)
        history = trainer.run()
    probabilities, labels = predict_dataset(trainer.classifier.model, trainer.val_data, trainer.predictor())
    hits = np.argmax(probabilities, axis=-1) == labels
    return float(np.mean(hits)), len(history), hits


def datasets_for(
    recipe: Recipe,
    spec: BackboneSpec,
    splits: DataSplits,
    replicas: int = 1,
    cache: CacheBudget | bool = True,
):
    """Training (shuffled), validation and ordered training batches of the global batch size.

    ``cache``: how :func:`make_dataset` caches decoded images; a budget is claimed in the order
    ordered, validation, training (the ordered images feed every frozen-base feature pass).
    """
    size, batch = image_size_for(recipe, spec), recipe.data.batch_size * replicas
    ordered = make_dataset(splits.train, size, batch, cache=cache)
    val = as_float(make_dataset(splits.val, size, batch, cache=cache))
    train = as_float(make_dataset(splits.train, size, batch, shuffle=True, seed=recipe.seed, cache=cache))
    return shard_by_example(train), shard_by_example(val), ordered


def train_and_report(
    session: Session, splits, run_dir: Path, info: dict, device: Device, started, verbose, resumed=False
):
    recipe = session.recipe
    write_text(run_dir / "recipe.toml", recipe_io.dumps(recipe))
    runfolder.save_labels(splits.class_names, run_dir)
    write_json(run_dir / "dataset_card.json", splits.card.to_dict())
    journal = SelectionJournal(run_dir)  # selection.json's one writer
    if session.selection is not None:  # before the first phase: a resume never re-runs the trials
        journal.record_selection(session.selection)
    journal.settled()
    if session.partner is not None:  # where a resume finds it
        averaging.write_partner(run_dir, session.partner)
    runfolder.save_run_info(run_dir, {**info, "status": "training"})
    training = time.perf_counter()
    result = resume_training(session, splits, run_dir, info, device, started, verbose, resumed)
    trials = session.selection.trials if session.selection is not None else None
    if trials is not None:  # what the trials cost next to the fit of the recipe they chose
        costed = dataclasses.replace(trials, final_fit_seconds=time.perf_counter() - training)
        selection = dataclasses.replace(session.selection, trials=costed)
        journal.record_selection(selection)
        if info.get("report", True):  # written before the fit's time was known: now with the trials' cost
            write_html_report(run_dir)
        result = dataclasses.replace(result, selection=selection)
    return result


def resume_training(session, splits, run_dir, info, device, started, verbose, resumed=False) -> FitResult:
    """Train what is left of the run in ``run_dir`` (all of it, for a new one), then evaluate,
    calibrate, save and report; ``resumed``: a ``resume`` after a stop, whose seconds count from it."""
    recipe, spec, stopwatch = session.recipe, session.spec, session.stopwatch
    partner_recipe = averaging.read_partner(run_dir)  # written by train_and_report: fit and resume alike
    with device.strategy.scope(), peer_failures(run_dir, device.cluster):
        trainer = make_trainer(session, splits, run_dir, verbose, device)
        # The partner's first passes, computed with the run's while its first phase is still to run.
        pending = (
            partner_recipe is not None
            and not TrainState.load(averaging.partner_dir(run_dir)).completed_phases
        )
        shared = share_first_passes(trainer, partner_recipe) if pending else None
        trainer.run()
        recipe = trainer.recipe  # with any "auto" learning rate resolved by its range test
        partner, partner_plan = None, ()
        if partner_recipe is not None:
            with stopwatch.stage("partner"):
                partner, partner_plan = train_partner(
                    partner_recipe, splits, run_dir, session.hooks, verbose, device, shared
                )
    val = trainer.val_data
    main = averaging.member_name(recipe)  # the run's own network: the first member
    trained = {main: (session.classifier.model, trainer)}
    if partner is not None:
        trained[averaging.member_name(partner.recipe)] = (partner.classifier.model, partner)
    distributed = device.replicas > 1 or device.cluster is not None
    # Evaluated here alone (the strategy's model gathers every replica's), through the steps
    # training traced; a local copy under distribution predicts on its own.
    members = {name: local_copy(m) if distributed else m for name, (m, _) in trained.items()}
    predictors = {
        name: members[name].predict_on_batch if distributed else member_trainer.predictor()
        for name, (_, member_trainer) in trained.items()
    }
    model = averaging.average_models(members) if partner is not None else members[main]
    if device.cluster is not None:
        say(verbose, f"{device.cluster.describe()}: final weights sha256 {weights_sha256(model)}")
        if not device.cluster.is_chief:  # the chief writes the run folder; this worker's copy goes
            remove_worker_dir(run_dir)
            return dataclasses.replace(planned(session, started), model=model, recipe=recipe)
    test_predict, val_predict = (averaging.MemberPredictor(predictors) for _ in range(2))
    # Read three times (the test evaluation, then the noise and JPEG passes): decoded once.
    test_data = test_dataset(recipe, spec, splits, cache=trainer.cache or False) if splits.test else None
    with stopwatch.stage("calibration"):  # on the validation images, before any held-out figure
        cached = None if distributed else _cached_validation(trained)
        if cached is not None:  # every network's base stayed as loaded: its head on the cached features
            by_member, val_labels = cached
            val_probabilities = averaging.mean_probabilities(list(by_member.values()))
        else:
            val_probabilities, val_labels = predict_dataset(model, val, val_predict)
            by_member = val_predict.probabilities(len(val_labels))
        validation_members = by_member  # every network's, kept for metrics.json's "members"
        partner_check = averaging.check_partner(by_member, val_labels) if partner is not None else None
        alone = None if partner_check is None or partner_check.kept else main
        if alone is not None:  # the run's own network is the model; the partner's figures stay recorded
            model, by_member = members[alone], {alone: by_member[alone]}
            val_probabilities = by_member[alone]
            test_predict.alone = alone
        calibration = calibrate(model, recipe.head.calibration, by_member, val_labels)
        temperature = calibration.temperature if calibration is not None and calibration.applied else 1.0
        if alone is None and partner is not None and temperature != 1.0:  # after the networks' mean
            model = averaging.average_models(members, temperature)
            test_predict.temperature = temperature
    if partner_check is not None:
        say(verbose, partner_check.describe())
    if calibration is not None:
        say(verbose, calibration.describe())
        if calibration.applied:  # the validation pass's probabilities, as the scaled model gives them
            val_probabilities = scaled_probabilities(val_probabilities, calibration.temperature)
    with stopwatch.stage("test evaluation"):
        test = test_metrics(model, splits, run_dir, test_data, test_predict)  # also saves predictions
    # The calibration pass's predictions, scaled as the model gives them, are the validation record.
    with stopwatch.stage("validation evaluation"):
        validation = record_held_out(
            val_probabilities,
            val_labels,
            splits.val.paths,
            splits.class_names,
            split="validation",
            run_dir=run_dir,
            image_size=int(model.input_shape[1]),
            white_level=splits.val.white_level,
            file=PREDICTIONS_FILE if test is None else VALIDATION_PREDICTIONS_FILE,  # beside the test split's
        )
    # Which images each record is, in metrics.json as evaluate words its own.
    validation = dataclasses.replace(validation, scored=VALIDATION_SCORED.format(n=validation.num_samples))
    if test is not None:
        test = dataclasses.replace(test, scored=splits.holdout.note)
    headline, metrics = ("test", test) if test is not None else ("validation", validation)
    with stopwatch.stage("robustness"):
        held_out = test_data if test is not None else val
        # Its own predictor (the others keep their outputs); a single network has its temperature folded in.
        mean_of_two = partner is not None and alone is None
        used = predictors if alone is None else {alone: predictors[alone]}
        noisy_predict = averaging.MemberPredictor(used, temperature if mean_of_two else 1.0)
        networks = [recipe] + ([partner.recipe] if mean_of_two else [])  # the model's networks
        trained_noise = {averaging.member_name(r): r.augment.noise for r in networks}
        robustness = measure_robustness(
            model,
            held_out,
            metrics.accuracy,
            headline,
            noisy_predict,
            seed=recipe.seed,
            trained_noise=trained_noise,
        )
    record = {"headline": headline, **({"test": test.to_dict()} if test else {})}
    record["validation"] = validation.to_dict()
    if calibration is not None:
        record["calibration"] = calibration.to_dict()
    record["robustness"] = robustness.to_dict()
    if partner is not None:  # each network's own figures beside the average's, from the same passes
        by_split = {}
        if test is not None:
            test_labels = load_predictions(run_dir).labels
            by_split["test"] = (test_predict.probabilities(len(test_labels)), test_labels)
        by_split["validation"] = (validation_members, val_labels)  # cached features' or the pass's
        record["members"] = member_metrics(by_split, splits.class_names)
        record["averaging"] = partner_check.to_dict()
        dropped = None
        if not partner_check.kept:  # what the mean would have scored: a record, never chosen on
            averaged = {split: mean_accuracy(p, labels) for split, (p, labels) in by_split.items()}
            record["averaging"]["averaged_accuracy"], dropped = averaged, averaged[headline]
        say(verbose, describe_members(record["members"], headline, metrics.accuracy, dropped))
    write_json(run_dir / "metrics.json", record)
    with stopwatch.stage("save model"):
        runfolder.save_model(model, run_dir)
    before = stopwatch.before if resumed else 0.0
    seconds = before + time.perf_counter() - started
    if not resumed:
        counted = {}
    elif before:
        counted = {"seconds_before_the_stop": round(before, 1)}
    else:
        counted = {"seconds_counted_from": "the resume"}
    earlier = ("seconds_counted_from", "seconds_before_the_stop")  # an earlier resume's, stopped again
    finished = {
        **{key: value for key, value in info.items() if key not in earlier},
        "seconds": round(seconds, 1),
        **counted,
        "plan": [dataclasses.asdict(p) for p in session.plan],
        **({"partner_plan": [dataclasses.asdict(p) for p in partner_plan]} if partner else {}),
    }
    # "finished" once the figures, report and timings are written: a run stopped while writing
    # them resumes (it evaluates the saved weights again and writes them all).
    runfolder.save_run_info(run_dir, {**finished, "status": "reporting"})  # what the report reads
    if info.get("report", True):
        write_plots(run_dir, metrics, recipe, model, stopwatch, split=headline)
    else:  # fit(report=False): the numbers, no pictures (`transferkit report` draws them later)
        with stopwatch.stage("interpretation"):
            write_interpretation(run_dir, figures=False)
    stopwatch.write(run_dir)
    runfolder.save_run_info(run_dir, {**finished, "status": "finished"})
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
        robustness,
        calibration,
        resumed,
        before,
    )
    say(verbose, result.summary())
    if robustness.fragile:
        say(verbose, f"Warning: {robustness.warning()}")
    say(verbose, stopwatch.summary())
    session.hooks.finished(result)
    return result


def _cached_validation(trained: dict) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """``({network: validation probabilities}, labels)`` from each network's cached validation
    features, where every network's base stayed as loaded (a frozen base, a truncation): what a pass
    of the images would give again (2.4 s of a 55-s fit of 412 chess pieces at 224 px, a truncation
    averaged with the frozen base). None where any network needs the pass."""
    cached = {name: member_trainer.cached_validation() for name, (_, member_trainer) in trained.items()}
    if any(result is None for result in cached.values()):
        return None
    labels = [result[1] for result in cached.values()]
    if any(not np.array_equal(labels[0], other) for other in labels[1:]):
        return None  # not in one order: the pass decides
    return {name: probabilities for name, (probabilities, _) in cached.items()}, np.asarray(labels[0])


def train_partner(
    recipe: Recipe,
    splits,
    run_dir: Path,
    hooks,
    verbose,
    device: Device,
    first_passes: FirstPasses | None = None,
) -> tuple[Trainer, tuple]:
    """Train (or resume) the partner network averaged with the run's, in ``<run>/partner``;
    return its trainer and its plan.

    Its base is built anew from the pretrained weights and the seed set as a fit of ``recipe``
    alone sets it, so the partner is the model ``fit --recipe <its recipe.toml>`` would train (its
    first phase on ``first_passes``, where the run computed them with its own: the same images,
    warps and seeds, through the same pretrained layers).
    """
    spec = get_backbone(recipe.backbone.name)
    at = f" at {recipe.backbone.cut!r}" if recipe.strategy == "truncate" else ""
    say(verbose, f"Partner network: {recipe.name} ({recipe.strategy}{at})")
    keras.utils.set_random_seed(recipe.seed)  # as fit's device scope does: random weights too
    base, weights_source = build_base(spec, image_size_for(recipe, spec), recipe.backbone.weights)
    keras.utils.set_random_seed(recipe.seed)  # as prepare does before the classifier
    session = assemble(recipe, spec, base, splits, None, weights_source, verbose)
    session = dataclasses.replace(session, hooks=hooks)
    trainer = make_trainer(session, splits, averaging.partner_dir(run_dir), verbose, device)
    trainer.features.first_passes = first_passes
    trainer.run()
    return trainer, session.plan


def member_metrics(by_split: dict, class_names) -> dict[str, dict[str, dict]]:
    """``{member: {split: {"accuracy", "accuracy_interval"}}}`` from each split's
    ``({member: probabilities}, labels)``."""
    members: dict[str, dict[str, dict]] = {}
    for split, (by_member, labels) in by_split.items():
        for name, probabilities in by_member.items():
            m = compute_metrics(probabilities, labels, class_names)
            record = {"accuracy": m.accuracy, "accuracy_interval": list(m.accuracy_interval)}
            members.setdefault(name, {})[split] = record
    return members


def mean_accuracy(by_member: dict[str, np.ndarray], labels: np.ndarray) -> float:
    """Top-1 accuracy of the members' mean probabilities."""
    mean = averaging.mean_probabilities(list(by_member.values()))
    return float(np.mean(mean.argmax(axis=1) == np.asarray(labels)))


def describe_members(members: dict, split: str, accuracy: float, dropped_average: float | None = None) -> str:
    """One line: each network's accuracy on ``split`` beside the model's: the average's, or, where
    the partner was dropped, what their average would have scored (``dropped_average``); the run's
    own network is the first of ``members``."""
    each = ", ".join(f"{averaging.in_words(name)} {m[split]['accuracy']:.3f}" for name, m in members.items())
    if dropped_average is not None:
        main = averaging.in_words(next(iter(members)))
        return (
            f"Each network's {split} accuracy: {each} (the model: the {main}; their average "
            f"would have scored {dropped_average:.3f})"
        )
    return f"Averaged model {split} accuracy {accuracy:.3f}; each network alone: {each}"


def make_trainer(
    session: Session, splits: DataSplits, run_dir: Path, verbose: int, device: Device | None = None
) -> Trainer:
    """A Trainer for the session's recipe on the training split, validating on the validation split.

    With a ``device``, batches are global (``batch_size`` x replicas); under multi-worker training
    frozen-base features are not cached (each worker would need its shard's).
    """
    replicas = device.replicas if device is not None else 1
    cache = device is None or device.cluster is None
    if not cache and any(phase.train == "head" for phase in session.recipe.phases):
        message = "frozen-base features are not cached; head phases train through the frozen base"
        say(verbose, f"Multi-worker: {message}.")
    budget = budget_for_run(session.recipe.data.cache_memory, run_dir)  # spills to run_dir/cache
    train, val, ordered = datasets_for(session.recipe, session.spec, splits, replicas, cache=budget)
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
        clean_features=session.clean_features if cache and replicas == 1 else None,
        stopwatch=session.stopwatch,
        cache=budget,
    )


def test_metrics(model, splits, run_dir: Path, data: tf.data.Dataset | None, predict=None) -> Metrics | None:
    """The held-out test split's metrics from ``data`` (:func:`test_dataset`; ``predict``: as for
    evaluate_held_out); None without a test split."""
    if data is None or splits.test is None or not splits.test.labels:
        return None
    return evaluate_held_out(
        model,
        data,
        splits.test.paths,
        splits.class_names,
        split="test",
        run_dir=run_dir,
        predict=predict,
        white_level=splits.test.white_level,
    )


def test_dataset(
    recipe: Recipe, spec: BackboneSpec, splits: DataSplits, cache: CacheBudget | bool = False
) -> tf.data.Dataset:
    """The test split as float batches in file order; ``cache`` as for ``make_dataset`` (the run's
    budget: its decoded images are kept after the first pass, where the budget has room)."""
    size = image_size_for(recipe, spec)
    return as_float(make_dataset(splits.test, size, recipe.data.batch_size, cache=cache))


def write_plots(
    run_dir: Path,
    metrics: Metrics,
    recipe: Recipe,
    model: keras.Model,
    stopwatch: Stopwatch | None = None,
    split: str | None = None,
) -> None:
    """The figures, the interpretation (top losses, Grad-CAM, calibration) and ``report.html``."""
    stopwatch = stopwatch or Stopwatch()
    with stopwatch.stage("plots"):
        figures.plot_run(run_dir, metrics, recipe, split=split)
    with stopwatch.stage("interpretation"):
        write_interpretation(run_dir, model)  # from predictions.npz: confused pairs, top losses, Grad-CAM
    with stopwatch.stage("report"):
        write_html_report(run_dir)
