"""Trials on close calls: candidates, the halving, and fit's use of them (tiny backbone, synthetic data)."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import transferkit
import transferkit.api  # noqa: F401  (bound session's names at import: before any test patches them)
from transferkit import session as stages  # where fit's stages (and what they call) live
from transferkit.recipes import for_image_size, load_builtin, with_overrides
from transferkit.selection import trials as trial_rules
from transferkit.selection.decision import Selection
from transferkit.selection.measure import probe_quadrant
from transferkit.selection.rules import CutScore
from transferkit.selection.trials import (
    SWITCH_MARGIN_SE,
    TRAIN_SETUP_PASSES,
    TRAIN_STEP_PASSES,
    Candidate,
    candidates,
    over_budget,
    paired_standard_error,
    scaled_recipe,
    successive_halving,
    training_passes,
    with_trials,
)
from transferkit.testing import make_image_folder, stopped
from transferkit.training.augment import is_identity

CARD = {"num_classes": 3, "num_train": 60, "min_images_per_class": 20, "median_images_per_class": 20,
        "imbalance": 1.0}  # fmt: skip
SCORES = (
    CutScore("early", 0.1, 0.80, 8, 0.05),
    CutScore("mid", 0.2, 0.84, 16, 0.05),
    CutScore("deep", 0.3, 0.83, 32, 0.05),
)


def _selection(close: bool, confidence: float = 0.3, **changes) -> Selection:
    fields = dict(size="small", similar=True, quadrant="small_similar", recipe="freeze", cut_point=None,
                  confidence=confidence, close_call=close, reasons=(), scores=SCORES, seconds=0)  # fmt: skip
    return Selection(**(fields | changes))


def test_a_confident_call_has_only_the_pick_as_candidate():
    assert candidates(_selection(close=False, confidence=0.99), CARD, size_measured=True) == (
        Candidate("small_similar"),
    )


def test_a_close_similarity_call_adds_the_other_side_cut_at_the_best_earlier_cut():
    found = candidates(_selection(close=True), CARD, size_measured=True)
    assert found == (Candidate("small_similar"), Candidate("small_dissimilar", "mid"))
    flipped = _selection(
        close=True, similar=False, quadrant="small_dissimilar", recipe="truncate", cut_point="mid"
    )
    assert candidates(flipped, CARD, size_measured=True) == (
        Candidate("small_dissimilar", "mid"),
        Candidate("small_similar"),
    )


def test_a_close_size_call_adds_the_other_size():
    near = CARD | {"median_images_per_class": 45, "min_images_per_class": 45}  # 25% more would be large
    found = candidates(_selection(close=True, confidence=0.99), near, size_measured=True)
    assert found == (Candidate("small_similar"), Candidate("large_similar"))
    assert candidates(_selection(close=True, confidence=0.99), near, size_measured=False) == (
        Candidate("small_similar"),
    )


def test_a_close_similarity_call_between_the_whole_network_recipes_is_not_trialled():
    large = CARD | {"median_images_per_class": 150, "min_images_per_class": 150, "num_train": 450}
    fine_tune = _selection(close=True, size="large", quadrant="large_similar", recipe="fine_tune")
    assert candidates(fine_tune, large, size_measured=True) == (Candidate("large_similar"),)
    retrain = dataclasses.replace(fine_tune, similar=False, quadrant="large_dissimilar", recipe="retrain")
    assert candidates(retrain, large, size_measured=True) == (Candidate("large_dissimilar"),)
    near = large | {"median_images_per_class": 55, "min_images_per_class": 55, "num_train": 165}
    # below RETRAIN_IMAGES_PER_CLASS the dissimilar side truncates, and size is close: both are trialled
    found = candidates(fine_tune, near, size_measured=True)
    truncate = Candidate("small_dissimilar", "mid")
    assert found == (Candidate("large_similar"), truncate, Candidate("small_similar"))


def test_the_dissimilar_side_of_a_close_call_follows_the_image_size_it_was_measured_at():
    large = CARD | {"median_images_per_class": 100, "min_images_per_class": 100, "num_train": 300}
    fine_tune = _selection(close=True, size="large", quadrant="large_similar", recipe="fine_tune")
    # at 96 px dissimilar data truncates below 120 per class: a head-only rival, trialled
    low = dataclasses.replace(fine_tune, image_size=96)
    assert candidates(low, large, size_measured=True) == (
        Candidate("large_similar"),
        Candidate("small_dissimilar", "mid"),
    )
    # at 224 px it retrains from 50: the other whole-network recipe, not trialled
    high = dataclasses.replace(fine_tune, image_size=224)
    assert candidates(high, large, size_measured=True) == (Candidate("large_similar"),)


def test_scaled_recipe_scales_the_phases_that_train_the_base_and_keeps_at_least_one_epoch():
    built_in = load_builtin("large_similar")  # warm-up 10 (head), then the whole network
    tune = dataclasses.replace(built_in.phases[1], epochs=10, warmup_epochs=1.0)
    recipe = dataclasses.replace(built_in, phases=(built_in.phases[0], tune))
    scaled = scaled_recipe(recipe, 0.25)
    assert [p.epochs for p in scaled.phases] == [10, 3]  # the head warm-up as it is; 2.5 rounds up
    assert scaled.phases[1].warmup_epochs == pytest.approx(0.3)  # the schedule compressed alike
    assert scaled.phases[0] == recipe.phases[0]
    assert [p.epochs for p in scaled_recipe(recipe, 0.01).phases] == [10, 1]
    trial = scaled_recipe(load_builtin("small_similar"), 0.1)
    assert [p.epochs for p in trial.phases] == [20]  # a head-only recipe: its head phase scaled
    assert is_identity(trial.augment) and not trial.augment.measure  # one clean feature pass
    mixing = dataclasses.replace(recipe.augment, mixup_alpha=0.4, cutmix_alpha=1.0)
    trial = scaled_recipe(dataclasses.replace(recipe, augment=mixing), 0.25)
    assert (trial.augment.mixup_alpha, trial.augment.cutmix_alpha) == (0.0, 0.0)  # no mixing either


def _fake_train(accuracies: dict[str, float], calls: list):
    def train(recipe):
        calls.append((recipe.name, recipe.backbone.cut, tuple(p.epochs for p in recipe.phases)))
        return accuracies[recipe.name], sum(p.epochs for p in recipe.phases), None  # no hits: not paired

    return train


def _recipe_for(candidate):
    recipe = with_overrides(load_builtin(candidate.quadrant))  # its phases at the default size
    backbone = dataclasses.replace(recipe.backbone, cut=candidate.cut_point or "none")
    return dataclasses.replace(recipe, backbone=backbone)


def test_successive_halving_drops_the_worse_half_and_gives_survivors_more_epochs():
    options = (Candidate("small_similar"), Candidate("small_dissimilar", "mid"), Candidate("large_similar"))
    accuracy = {"small_similar": 0.70, "small_dissimilar": 0.80, "large_similar": 0.75}
    calls = []
    trials = successive_halving(options, _recipe_for, _fake_train(accuracy, calls), budget=0.24, verbose=0)
    # 3 candidates: 2 rounds of 0.12; round 1: 0.04 of each recipe's epochs, round 2: 0.06 for 2 survivors
    assert [(r.quadrant, r.round) for r in trials.records] == [
        ("small_similar", 1), ("small_dissimilar", 1), ("large_similar", 1),
        ("small_dissimilar", 2), ("large_similar", 2),
    ]  # fmt: skip
    assert [r.phase_epochs for r in trials.records] == [(8,), (8,), (10, 1), (12,), (10, 1)]  # warm-up whole
    assert calls[1][1] == "mid"
    assert len(calls) == 4 and trials.records[-1].reused and trials.records[-1].seconds == 0  # (10, 1) again
    assert not any(record.reused for record in trials.records[:-1])
    assert trials.winner == Candidate("small_dissimilar", "mid") and trials.pick_changed
    record = trials.to_dict()
    assert record["pick_changed"] and record["share_of_final_fit"] is None and len(record["records"]) == 5


def test_two_candidates_one_round_and_a_tie_keeps_the_selectors_pick():
    options = (Candidate("small_dissimilar", "mid"), Candidate("small_similar"))
    trials = successive_halving(
        options, _recipe_for, _fake_train({"small_similar": 0.8, "small_dissimilar": 0.8}, []), verbose=0
    )
    assert {r.round for r in trials.records} == {1} and len(trials.records) == 2
    assert [r.phase_epochs for r in trials.records] == [(25,), (25,)]  # 200 x 0.25 / 2
    assert trials.winner == options[0] and not trials.pick_changed


def _hits(right: int, total: int = 200, first: int = 0) -> np.ndarray:
    """``total`` validation images, ``right`` of them classified right starting at image ``first``."""
    return np.roll(np.arange(total) < right, first)


def _paired_train(hits: dict[str, np.ndarray]):
    def train(recipe):
        return float(np.mean(hits[recipe.name])), 1, hits[recipe.name]

    return train


@pytest.mark.parametrize("disagree", [10, 40])
def test_the_pick_gives_way_only_to_a_lead_beyond_one_paired_standard_error(disagree):
    options = (Candidate("large_similar"), Candidate("small_dissimilar", "mid"))
    pick = _hits(140)  # 0.70 on 200 images
    changed = []
    for lead in range(1, disagree + 1):  # the rival: right on images the pick gets wrong, wrong on some it
        lost = (disagree - lead) // 2
        rival = pick.copy()
        rival[:lost] = False
        rival[140 : 140 + lost + lead] = True
        assert (rival != pick).sum() == 2 * lost + lead and rival.sum() - pick.sum() == lead
        error = paired_standard_error(rival, pick)
        difference = rival.astype(float) - pick
        assert error == pytest.approx(np.std(difference, ddof=1) / np.sqrt(200))
        hits = {"large_similar": pick, "small_dissimilar": rival}
        trials = successive_halving(options, _recipe_for, _paired_train(hits), verbose=0)
        (rival_record,) = [r for r in trials.records if r.quadrant == "small_dissimilar"]
        assert rival_record.se_against_pick == pytest.approx(error)
        assert [r.se_against_pick for r in trials.records if r.quadrant == "large_similar"] == [None]
        assert trials.pick_changed == (lead / 200 > SWITCH_MARGIN_SE * error + 1e-9), lead  # 3 of 10: equal
        reason = with_trials(_selection(True, quadrant="large_similar", recipe="fine_tune"), trials).reasons[
            -1
        ]
        assert ("within 1 standard error" in reason) == (not trials.pick_changed), reason
        changed.append(trials.pick_changed)
    # gets right; small leads keep the pick, large ones change it, and the line moves with the noise
    assert changed == sorted(changed) and changed[0] is False and changed[-1] is True
    assert changed.index(True) == {10: 3, 40: 6}[disagree]  # leads of 4 and of 7 images count
    one = pick.copy()
    one[140] = True  # a single image more, and no other difference: one standard error exactly
    assert paired_standard_error(one, pick) == pytest.approx(1 / 200)
    trials = successive_halving(
        options, _recipe_for, _paired_train({"large_similar": pick, "small_dissimilar": one}), verbose=0
    )
    assert not trials.pick_changed
    with pytest.raises(ValueError, match="different images"):
        paired_standard_error(pick, pick[:-1])


def test_head_only_candidates_go_first_and_a_saturated_one_leaves_the_whole_network_untried():
    options = (Candidate("large_similar"), Candidate("small_similar"))  # the pick trains the base
    calls = []
    trials = successive_halving(
        options, _recipe_for, _fake_train({"small_similar": 0.99, "large_similar": 1.0}, calls), verbose=0
    )
    assert [name for name, _, _ in calls] == ["small_similar"]  # the fine-tune trial never ran
    assert trials.skipped == (Candidate("large_similar"),) and trials.winner == Candidate("small_similar")
    assert trials.to_dict()["skipped"] == [{"quadrant": "large_similar", "cut_point": None}]
    chosen = with_trials(_selection(True, quadrant="large_similar", recipe="fine_tune"), trials)
    assert chosen.quadrant == "small_similar" and "not trialled" in chosen.reasons[-1]

    three = (Candidate("small_similar"), Candidate("small_dissimilar", "mid"), Candidate("large_similar"))
    calls.clear()
    accuracy = {"small_similar": 0.98, "small_dissimilar": 0.95, "large_similar": 1.0}
    trials = successive_halving(three, _recipe_for, _fake_train(accuracy, calls), verbose=0)
    assert len(calls) == 2 and [r.round for r in trials.records] == [1, 1]  # one survivor: no round 2
    assert trials.winner == Candidate("small_similar") and trials.skipped == (Candidate("large_similar"),)

    calls.clear()
    perfect = (Candidate("small_dissimilar", "mid"), Candidate("small_similar"))
    trials = successive_halving(
        perfect, _recipe_for, _fake_train({"small_dissimilar": 1.0, "small_similar": 1.0}, calls), verbose=0
    )
    assert len(calls) == 1 and trials.skipped == perfect[1:]  # could only tie, and lose the tie
    scores = {"small_dissimilar": 1.0, "small_similar": 0.9}
    trials = successive_halving(perfect[::-1], _recipe_for, _fake_train(scores, []), verbose=0)
    assert trials.skipped == () and trials.winner == perfect[0]  # perfect, but after: nothing to skip

    calls.clear()
    trials = successive_halving(
        options, _recipe_for, _fake_train({"small_similar": 0.97, "large_similar": 0.97}, calls), verbose=0
    )
    assert [name for name, _, _ in calls] == ["small_similar", "large_similar"]  # cheap first, both run
    assert trials.skipped == () and trials.winner == Candidate("large_similar")  # a tie: the pick


def test_a_whole_network_trial_is_not_run_against_a_head_only_pick_whose_fit_it_would_outweigh():
    sizes = (400, 80)
    truncate = _recipe_for(Candidate("small_dissimilar", "mid"))
    fine_tune = _recipe_for(Candidate("large_similar"))
    fit_passes = training_passes(truncate, *sizes)  # its augmented passes, validation, the check
    assert fit_passes == (truncate.augment.cached_passes + 1) * 400 + 80
    assert training_passes(truncate, *sizes, banked=True) == 0  # a head on the bank's features
    tune = fine_tune.phases[-1]
    whole_network = tune.epochs * (TRAIN_STEP_PASSES * 400 + 80) + TRAIN_SETUP_PASSES  # set-up once
    assert training_passes(fine_tune, *sizes, banked=True) == whole_network

    options, calls = (Candidate("small_dissimilar", "mid"), Candidate("large_similar")), []
    scores = {"small_dissimilar": 0.7, "large_similar": 0.9}
    trials = successive_halving(options, _recipe_for, _fake_train(scores, calls), sizes=sizes, verbose=0)
    assert [name for name, _, _ in calls] == ["small_dissimilar"]  # 2 whole epochs > a quarter of the fit
    assert trials.skipped == (Candidate("large_similar"),) and trials.winner == options[0]
    without = successive_halving(options, _recipe_for, _fake_train(scores, []), verbose=0)
    assert without.winner == options[1]  # no sizes, no budget in passes: it runs, and wins

    # The other way round, on 400 images, the whole-network pick's own trial is over the budget: the
    # head-only rival (first, free) runs, but unopposed it cannot win: the halving stops, the pick stands.
    calls.clear()
    trials = successive_halving(
        options[::-1], _recipe_for, _fake_train(scores, calls), sizes=sizes, verbose=0
    )
    assert [name for name, _, _ in calls] == ["small_dissimilar"]
    assert trials.skipped == (Candidate("large_similar"),) and trials.winner == Candidate("large_similar")

    # On 8,000 images the whole-network pick's own fit is large enough for its trial (4 of 15 epochs
    # and its set-up) to fit in a quarter of it: both are trialled.
    calls.clear()
    reverse = options[::-1]
    trials = successive_halving(
        reverse, _recipe_for, _fake_train(scores, calls), sizes=(8000, 2000), verbose=0
    )
    assert sorted(name for name, _, _ in calls) == ["large_similar", "small_dissimilar"]
    assert trials.winner == options[1] and trials.skipped == ()
    # The head-only trial costs no passes: the whole-network one takes the round's whole quarter.
    epochs = {record.quadrant: record.phase_epochs for record in trials.records}
    assert epochs["large_similar"] == (fine_tune.phases[0].epochs, round(tune.epochs * 0.25))


# ---------------------------------------------------------------------------------------------
# Through fit
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "shapes", classes=3, per_class=10)


def _force(monkeypatch, close: bool):
    def forced(*args, **kwargs):
        measured, probe = probe_quadrant(*args, **kwargs)
        return dataclasses.replace(measured, close_call=close, confidence=0.3 if close else 0.99), probe

    monkeypatch.setattr(stages, "probe_quadrant", forced)


def _spy_trials(monkeypatch) -> list:
    calls = []
    original = stages.successive_halving
    monkeypatch.setattr(stages, "successive_halving", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    return calls


def _fit(folder, out, **options):
    """A tiny fit; without figures and report.html (report=False) unless a test reads them."""
    options = (
        dict(backbone="tiny", weights="random", epochs=2, batch_size=8, seed=7, verbose=0, report=False)
        | options
    )
    return transferkit.fit(str(folder), out=out, **options)


def _stopped_after_selection(folder, out, monkeypatch, **options) -> Path:
    """The run folder of a fit stopped where its training starts: the selection, trials included, is
    settled and written to ``selection.json`` (and ``recipe.toml``) before then."""
    with monkeypatch.context() as patch:
        patch.setattr(stages, "resume_training", stopped)
        with pytest.raises(KeyboardInterrupt):
            _fit(folder, out, **options)
    (run_dir,) = [p for p in Path(out).iterdir() if p.is_dir()]
    return run_dir


@pytest.fixture(scope="module")
def every_candidate_run(folder, tmp_path_factory):
    """One fit of a forced close call whose every candidate trains (on these easy shapes the first
    can score 1.000, and the next is then skipped: a rule with a test of its own), watched: the
    images each dataset read, whether inside the trials, and the recipes the trials trained.
    Shared by the tests that check it (they only read its run folder)."""
    read, inside, trained = [], [], []
    original_make, original_settle, original_trial = (
        stages.make_dataset,
        stages.settle_by_trials,
        stages.train_trial,
    )

    def spy_make(images, *args, **kwargs):
        read.append((bool(inside), images))
        return original_make(images, *args, **kwargs)

    def spy_settle(*args, **kwargs):  # the feature bank's pass and the trials
        inside.append(1)
        try:
            return original_settle(*args, **kwargs)
        finally:
            inside.clear()

    def spy_trial(recipe, *args, **kwargs):
        trained.append(recipe.name)
        return original_trial(recipe, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        _force(patch, close=True)
        patch.setattr(trial_rules, "_why_not", lambda *args, **kwargs: "")
        patch.setattr(stages, "make_dataset", spy_make)
        patch.setattr(stages, "settle_by_trials", spy_settle)
        patch.setattr(stages, "train_trial", spy_trial)
        run = _fit(folder, tmp_path_factory.mktemp("every-candidate"), report=True)  # its report is read
    return run, read, trained


@pytest.fixture(scope="module")
def trialled_run(folder, tmp_path_factory):
    """One whole fit of a forced close call, trials as the rules run them, and the calls of the
    halving it made; shared by the tests that compare other fits with it (they only read it)."""
    with pytest.MonkeyPatch.context() as patch:
        _force(patch, close=True)
        calls = _spy_trials(patch)
        run = _fit(folder, tmp_path_factory.mktemp("trialled"))
    return run, calls


@pytest.fixture(scope="module")
def stopped_after_trials(folder, tmp_path_factory):
    """A forced close call's fit stopped after its trials, before its training: its run folder and
    the halving's calls. Tests that resume it resume a copy."""
    with pytest.MonkeyPatch.context() as patch:
        _force(patch, close=True)
        calls = _spy_trials(patch)
        run_dir = _stopped_after_selection(folder, tmp_path_factory.mktemp("stopped"), patch)
    return run_dir, calls


def test_a_close_call_runs_trials_on_train_and_validation_only_and_records_them(folder, every_candidate_run):
    run, read, _ = every_candidate_run
    splits = transferkit.load_data(str(folder), seed=7)
    during = {path for was_inside, images in read if was_inside for path in images.paths}
    assert during and not during & set(splits.test.paths)  # trials read images, never a test image
    assert during <= set(splits.train.paths) | set(splits.val.paths)
    assert any(set(images.paths) == set(splits.test.paths) for was_inside, images in read if not was_inside)
    record = json.loads((run.run_dir / "selection.json").read_text())["trials"]
    quadrants = {r["quadrant"] for r in record["records"]}
    assert quadrants == {"small_similar", "small_dissimilar"} and len(record["records"]) == 2
    for trial in record["records"]:
        assert 0 <= trial["val_accuracy"] <= 1 and trial["seconds"] > 0 and trial["epochs_run"] >= 1
        assert trial["phase_epochs"] == [1] and (trial["cut_point"] is not None) == (
            trial["quadrant"] == "small_dissimilar"
        )
    assert record["budget_fraction"] == 0.25 and record["final_fit_seconds"] > 0
    assert record["share_of_final_fit"] == pytest.approx(
        record["seconds"] / record["final_fit_seconds"], abs=1e-3
    )
    page = (run.run_dir / "report.html").read_text(encoding="utf-8")  # the fit's report has the cost
    assert f"{record['final_fit_seconds']:.3f}" in page and f"{record['share_of_final_fit']:.3f}" in page
    winner = record["winner"]["quadrant"]
    assert run.recipe.name == winner == run.selection.quadrant
    assert transferkit.recipes.load(run.run_dir / "recipe.toml").name == winner
    assert record["pick_changed"] == (winner != record["candidates"][0]["quadrant"])
    assert not list(run.run_dir.rglob("trial*"))  # the trials' folders are gone


def test_fast_selection_and_confident_calls_run_no_trials(folder, trialled_run, tmp_path, monkeypatch):
    calls = _spy_trials(monkeypatch)
    _force(monkeypatch, close=True)
    fast = _fit(folder, tmp_path, selection="fast")
    recorded = json.loads((fast.run_dir / "selection.json").read_text())
    assert recorded["trials"] is None and recorded["reasons"][-1].startswith(
        "close call, not trialled: selection 'fast'"
    )
    _force(monkeypatch, close=False)
    # Trials would run before the training starts: the confident fit stops there.
    confident = _stopped_after_selection(folder, tmp_path / "confident", monkeypatch)
    assert json.loads((confident / "selection.json").read_text())["trials"] is None
    assert calls == []
    with pytest.raises(transferkit.TransferkitError, match="Unknown selection 'slow'"):
        _fit(folder, tmp_path, selection="slow")
    trialled, halved = trialled_run  # trials that keep the pick: the run trains what the fast one did
    assert len(halved) == 1 and not trialled.selection.trials.pick_changed and trialled.recipe == fast.recipe
    assert not (trialled.run_dir / "report.html").exists()  # report=False: none, trials or not
    for got, expected in zip(trialled.model.get_weights(), fast.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_resume_after_trials_does_not_run_them_again(stopped_after_trials, tmp_path, monkeypatch):
    _force(monkeypatch, close=True)
    stopped_dir, calls = stopped_after_trials  # stopped by Ctrl-C where its training starts
    assert len(calls) == 1
    run_dir = shutil.copytree(stopped_dir, tmp_path / stopped_dir.name)
    original = stages.successive_halving
    monkeypatch.setattr(stages, "successive_halving", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    chosen = json.loads((run_dir / "selection.json").read_text())["trials"]["winner"]["quadrant"]
    resumed = transferkit.resume(run_dir, verbose=0)
    assert len(calls) == 1 and resumed.recipe.name == chosen
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


def test_a_fit_stopped_during_its_trials_resumes_them_without_measuring_or_training_them_again(
    folder, every_candidate_run, tmp_path, monkeypatch
):
    whole, _, trained_whole = every_candidate_run  # the same fit, never stopped
    first_trial = trained_whole[0]
    _force(monkeypatch, close=True)
    monkeypatch.setattr(trial_rules, "_why_not", lambda *args, **kwargs: "")  # both candidates train
    measured, trained = [], []
    forced, original_trial = stages.probe_quadrant, stages.train_trial
    monkeypatch.setattr(stages, "probe_quadrant", lambda *a, **k: measured.append(1) or forced(*a, **k))

    def trial(recipe, *args, **kwargs):
        trained.append(recipe.name)
        if len(trained) == 2:
            raise KeyboardInterrupt  # as Ctrl-C or a kill would stop it: the second trial unfinished
        return original_trial(recipe, *args, **kwargs)

    monkeypatch.setattr(stages, "train_trial", trial)
    with pytest.raises(KeyboardInterrupt):
        _fit(folder, tmp_path / "stopped")
    (run_dir,) = (tmp_path / "stopped").iterdir()
    assert "-auto-" in run_dir.name  # the recipe is not chosen yet when the folder is made
    assert json.loads((run_dir / "run.json").read_text())["status"] == "selecting"
    assert json.loads((run_dir / "selection.json").read_text())["trials"] is None  # measured, not settled
    assert len(json.loads((run_dir / "trials-progress.json").read_text())) == 1
    assert measured == [1] and len(trained) == 2

    resumed = transferkit.resume(run_dir, verbose=0)
    assert measured == [1] and len(trained) == 3 and trained[2] != first_trial  # only the unfinished trial
    assert not (run_dir / "trials-progress.json").exists()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished"
    # Nothing of the time before the stop was saved (no epoch had trained): its seconds are the resume's.
    assert resumed.resumed and info["seconds_counted_from"] == "the resume"
    assert f"{resumed.seconds:,.0f} s since the resume | " in resumed.summary()
    records = [json.loads((run.run_dir / "selection.json").read_text())["trials"] for run in (whole, resumed)]
    scores = [[(r["quadrant"], r["val_accuracy"]) for r in record["records"]] for record in records]
    assert scores[0] == scores[1] and records[0]["winner"] == records[1]["winner"]
    assert resumed.recipe == whole.recipe and resumed.metrics.accuracy == whole.metrics.accuracy
    for got, expected in zip(resumed.model.get_weights(), whole.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_two_fits_with_one_seed_run_the_same_trials_and_pick_the_same_winner(
    trialled_run, stopped_after_trials
):
    # The second fit stopped once its trials were settled: what they recorded is all this compares.
    records = []
    for run_dir in (trialled_run[0].run_dir, stopped_after_trials[0]):
        trials = json.loads((run_dir / "selection.json").read_text())["trials"]
        records.append([(r["quadrant"], r["cut_point"], r["val_accuracy"]) for r in trials["records"]])
        records[-1].append(trials["winner"])
    assert records[0] == records[1]


def test_a_close_call_whose_only_rival_is_over_budget_runs_no_trial_and_no_feature_bank(
    folder, tmp_path, monkeypatch
):
    _force(monkeypatch, close=True)
    pick, rival = Candidate("small_similar"), Candidate("large_similar")
    monkeypatch.setattr(stages, "candidates", lambda *a, **k: (pick, rival))
    calls = _spy_trials(monkeypatch)
    monkeypatch.setattr(stages, "feature_bank", lambda *a, **k: calls.append("bank"))
    # a fine-tune trial's epoch of the whole network > a quarter of the fit; all settled (and written)
    # before the training starts, where the fit stops
    run_dir = _stopped_after_selection(folder, tmp_path, monkeypatch)
    assert calls == []
    recorded = json.loads((run_dir / "selection.json").read_text())
    record = recorded["trials"]
    assert record["records"] == [] and record["skipped"] == [{"quadrant": "large_similar", "cut_point": None}]
    recipe = transferkit.recipes.load(run_dir / "recipe.toml")  # the recipe the fit goes on to train
    assert record["winner"]["quadrant"] == "small_similar" == recipe.name
    assert "over the budget" in recorded["reasons"][-1]


def test_a_close_call_whose_pick_alone_would_overrun_the_budget_runs_no_trial(folder, tmp_path, monkeypatch):
    _force(monkeypatch, close=True)
    pick, rival = Candidate("large_similar"), Candidate("small_similar")
    monkeypatch.setattr(stages, "candidates", lambda *a, **k: (pick, rival))
    calls = _spy_trials(monkeypatch)
    monkeypatch.setattr(stages, "feature_bank", lambda *a, **k: calls.append("bank"))
    # 18 training images: the set-up alone outweighs the fit; settled before the training, where it stops
    run_dir = _stopped_after_selection(folder, tmp_path, monkeypatch, size="large")
    assert calls == []
    recorded = json.loads((run_dir / "selection.json").read_text())
    record = recorded["trials"]
    assert record["records"] == [] and [c["quadrant"] for c in record["skipped"]] == [
        "large_similar",
        "small_similar",
    ]
    recipe = transferkit.recipes.load(run_dir / "recipe.toml")  # the recipe the fit goes on to train
    assert record["winner"]["quadrant"] == "large_similar" == recipe.name
    assert "the pick's own trial would cost over 25%" in recorded["reasons"][-1]


def test_over_budget_never_leaves_a_rival_without_the_pick_to_compare_with():
    sizes = (400, 80)
    options = (Candidate("small_dissimilar", "mid"), Candidate("large_similar"), Candidate("small_similar"))
    assert over_budget(options, _recipe_for, sizes) == (Candidate("large_similar"),)
    # a fine-tune pick's own trial: over a quarter of its fit on 400 images (set-up included), and
    # without it there is nothing to compare with; within it on 8,000
    assert over_budget(options[1:], _recipe_for, sizes) == options[1:]  # the pick first
    assert over_budget(options[1:], _recipe_for, (8000, 2000)) == ()
    short = for_image_size(load_builtin("large_similar"), 224)
    warmup, tune = short.phases
    short = dataclasses.replace(short, phases=(warmup, dataclasses.replace(tune, epochs=2)))
    costly_pick = (Candidate("large_similar"), Candidate("small_similar"))
    recipe_for = lambda c: short if c.quadrant == "large_similar" else _recipe_for(c)  # noqa: E731
    assert over_budget(costly_pick, recipe_for, sizes) == costly_pick  # pick over budget: nothing to compare
