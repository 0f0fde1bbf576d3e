"""Selector: LogME, the linear probe, the size and similarity rules, one-pass features, the plot."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from transferkit.errors import TransferkitError
from transferkit.reporting.selection_figure import plot_selection
from transferkit.selection import rules as selector
from transferkit.selection import transferability
from transferkit.selection.decision import Selection, select
from transferkit.selection.rules import (
    CLOSE_CALL_CONFIDENCE,
    RETRAIN_IMAGES_PER_CLASS,
    SATURATED_PROBE_ACCURACY,
    SMALL_IMAGES_PER_CLASS,
    CutScore,
    retrain_images_per_class,
    score_cut_points,
    similarity_decision,
    size_quadrant,
)
from transferkit.selection.transferability import extract_cut_features, linear_probe, linear_probes, logme


def blobs(n_per_class: int, num_classes: int, dim: int, separation: float, seed: int = 0):
    """Gaussian blobs: class c is shifted by `separation` along axis c (axes beyond dim wrap)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), n_per_class)
    features = rng.normal(size=(len(labels), dim))
    features[np.arange(len(labels)), labels % dim] += separation
    return features, labels


def card(median: float, total: float | None = None, *, minimum: float | None = None, imbalance=1.0):
    total = 10 * median if total is None else total
    return {
        "num_classes": max(1, round(total / median)),
        "num_train": total,
        "min_images_per_class": median if minimum is None else minimum,
        "median_images_per_class": median,
        "imbalance": imbalance,
    }


# ---------------------------------------------------------------------------------------------- LogME


def reference_logme(features: np.ndarray, labels: np.ndarray) -> float:
    """Independent derivation: y ~ N(0, I/beta + F F^T / alpha), maximised numerically, no SVD."""
    n = len(features)
    evidences = []
    for c in np.unique(labels):
        target = (labels == c).astype(float)

        def negative(log_params, target=target):
            alpha, beta = np.exp(log_params)
            covariance = np.eye(n) / beta + features @ features.T / alpha
            _, log_det = np.linalg.slogdet(covariance)
            return 0.5 * (n * math.log(2 * math.pi) + log_det + target @ np.linalg.solve(covariance, target))

        starts = ([0.0, 0.0], [2.0, 2.0], [-2.0, 1.0])
        options = {"xatol": 1e-9, "fatol": 1e-13, "maxiter": 2_000}
        bounds = [(-20.0, 40.0)] * 2  # alpha or beta may run off to infinity; e^40 is as good as there
        fits = [
            optimize.minimize(negative, s, method="Nelder-Mead", bounds=bounds, options=options)
            for s in starts
        ]
        evidences.append(-min(fit.fun for fit in fits) / n)
    return float(np.mean(evidences))


@pytest.mark.parametrize("n,dim", [(30, 4), (12, 3), (10, 10)])
def test_logme_matches_direct_evidence_maximisation(n, dim):
    rng = np.random.default_rng(n + dim)
    labels = np.arange(n) % 3
    features = rng.normal(size=(n, dim))
    features[:, 0] += labels
    assert logme(features, labels) == pytest.approx(reference_logme(features, labels), abs=1e-6)


def test_logme_with_more_dimensions_than_samples_is_at_least_the_numeric_maximum():
    # N <= D: the evidence may peak at beta -> infinity; the fixed point must still reach the sup
    rng = np.random.default_rng(3)
    labels = np.arange(8) % 2
    features = rng.normal(size=(8, 30)) + 0.5
    features[:, 0] += 2 * labels
    ours, reference = logme(features, labels), reference_logme(features, labels)
    assert ours >= reference - 1e-6
    assert ours == pytest.approx(reference, abs=1e-4)


def test_logme_hand_computed_single_feature():
    # One feature F = [1, -1, 1, -1]^T (N=4, D=1); class 1 is y = [1, 0, 1, 0]
    # for class 1 (and 1 - y for class 0). Evidence of y ~ N(0, I/b + F F^T / a), maximised by hand:
    # project on u = F/2 (sigma = 4, z = 1) and on the 3 null directions (residual ||y||^2 - 1 = 1).
    # log p = -2 log 2pi - 1/2 log(1/b + 4/a) - 3/2 log(1/b) - 1/2 * 1/(1/b + 4/a) - b/2 * 1
    # maximised: 1/b = 1/3 (null-space variance = residual / 3) and 1/b + 4/a = 1 (z^2), i.e.
    # log p = -2 log 2pi - 3/2 log(1/3) - 1/2 - 3/2 = -2 log 2pi + 3/2 log 3 - 2.
    features = np.array([[1.0], [-1.0], [1.0], [-1.0]])
    labels = np.array([1, 0, 1, 0])
    expected = (-2 * math.log(2 * math.pi) + 1.5 * math.log(3) - 2) / 4
    assert logme(features, labels) == pytest.approx(expected, abs=1e-7)


def test_logme_separable_beats_shuffled_labels():
    features, labels = blobs(30, 3, 8, separation=6.0)
    shuffled = np.random.default_rng(1).permutation(labels)
    assert logme(features, labels) > logme(features, shuffled) + 0.2


def test_logme_increases_with_class_separation():
    values = [logme(*blobs(30, 3, 8, separation=s)) for s in (0.0, 1.0, 2.0, 4.0, 8.0)]
    assert values == sorted(values) and values[-1] - values[0] > 0.3


@settings(max_examples=15, deadline=None)
@given(scale=st.floats(1e-3, 1e3), seed=st.integers(0, 1000))
def test_logme_ignores_feature_scale_and_label_names(scale, seed):
    features, labels = blobs(10, 3, 5, separation=2.0, seed=seed)
    renamed = np.array(["c", "a", "b"])[labels]
    assert logme(features * scale, renamed) == pytest.approx(logme(features, labels), abs=1e-6)


def test_logme_ignores_duplicated_and_dead_feature_columns():
    # the evidence depends on F only through F F^T: copying every column (F F^T doubles, absorbed by
    # alpha) or an all-zero one (a dead ReLU channel) leaves it unchanged; the Gram is then singular
    features, labels = blobs(20, 3, 5, separation=2.0)
    padded = np.hstack([features, features, np.zeros((60, 3))])
    assert logme(padded, labels) == pytest.approx(logme(features, labels), abs=1e-7)
    assert math.isfinite(logme(np.zeros((60, 4)), labels))


def test_logme_decomposes_the_gram_matrix_once_for_all_classes(monkeypatch):
    # N = 1,500 > D = 1,024, 10 classes: one eigendecomposition of the smaller Gram matrix serves
    # every class (~0.5 s of CPU); one per class would take ~10x longer. Counted, not timed.
    features, labels = blobs(150, 10, 1024, separation=1.0)
    shapes = []
    real_eigh = np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda a: shapes.append(a.shape) or real_eigh(a))
    value = logme(features.astype(np.float32), labels)
    assert math.isfinite(value) and shapes == [(1024, 1024)]


def test_logme_rejects_mismatched_input():
    with pytest.raises(TransferkitError, match="labels"):
        logme(np.zeros((4, 2)), np.zeros(3))
    with pytest.raises(TransferkitError, match="NaN"):
        logme(np.full((4, 2), np.nan), np.zeros(4))


# ------------------------------------------------------------------------------------- linear probe


def test_linear_probe_separable_and_shuffled():
    features, labels = blobs(40, 4, 8, separation=8.0)
    assert linear_probe(features, labels) == pytest.approx(1.0, abs=0.01)
    shuffled = np.random.default_rng(0).permutation(labels)
    assert abs(linear_probe(features, shuffled) - 0.25) < 0.12


def test_linear_probe_on_wide_features_solves_the_same_problem_in_the_span_of_the_rows(monkeypatch):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 15)
    features = rng.normal(size=(60, 500)) + 0.8 * rng.normal(size=(4, 500))[labels]  # D >> N
    train, test = np.arange(60) % 5 != 0, np.arange(60) % 5 == 0
    plain = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, tol=1e-10))
    expected = plain.fit(features[train], labels[train]).predict_proba(features[test])
    widths, fit = [], LogisticRegression.fit

    def recording(self, x, y):
        widths.append(x.shape[1])
        return fit(self, x, y)

    monkeypatch.setattr(LogisticRegression, "fit", recording)
    predicted = transferability._fit_predict(features[train], labels[train], features[test])
    assert widths == [48]  # the 48 training rows span the solution, not the 500 columns
    np.testing.assert_array_equal(predicted, expected.argmax(axis=1))


def test_linear_probe_handles_tiny_classes():
    features, labels = blobs(6, 3, 4, separation=8.0)
    features, labels = np.vstack([features, [[9.0, 9, 9, 9]]]), np.append(labels, 3)  # singleton class
    accuracy = linear_probe(features, labels, folds=5)
    assert accuracy == pytest.approx(18 / 19)  # the singleton can never be predicted
    with pytest.raises(TransferkitError, match="two classes"):
        linear_probe(features[:6], labels[:6])


def test_linear_probe_shrinks_folds_to_the_smallest_class(monkeypatch):
    import sklearn.model_selection

    used = []
    real = sklearn.model_selection.StratifiedKFold

    def spy(n_splits, **kwargs):
        used.append(n_splits)
        return real(n_splits, **kwargs)

    monkeypatch.setattr(sklearn.model_selection, "StratifiedKFold", spy)
    features, labels = blobs(10, 2, 3, separation=5.0)
    linear_probe(features, labels, folds=5)
    linear_probe(features[7:], labels[7:], folds=5)  # smallest class: 3 images
    assert used == [5, 3]


def test_linear_probes_run_every_fold_of_every_set_in_parallel_with_the_one_by_one_scores(monkeypatch):
    from sklearn.model_selection import StratifiedKFold

    from transferkit.selection import transferability

    sets = {f"dim{dim}": blobs(12, 3, dim, separation=1.5, seed=dim)[0] for dim in (2, 5, 40)}
    labels = blobs(12, 3, 2, separation=1.5)[1]
    one_by_one = {}
    for name, features in sets.items():  # the probe written out: standardise, fit, count the hits
        folds = StratifiedKFold(5, shuffle=True, random_state=4).split(features, labels)
        hits = sum(
            int((transferability._fit_predict(features[a], labels[a], features[b]) == labels[b]).sum())
            for a, b in folds
        )
        one_by_one[name] = hits / len(labels)
    pools, executor = [], transferability.ThreadPoolExecutor

    def recording(max_workers):
        pools.append(max_workers)
        return executor(max_workers=max_workers)

    monkeypatch.setattr(transferability, "ThreadPoolExecutor", recording)
    monkeypatch.setattr(transferability, "usable_cpus", lambda: 3)
    assert linear_probes(sets, labels, seed=4) == one_by_one
    assert pools == [3]  # 15 regressions (3 sets x 5 folds) on three threads
    with pytest.raises(TransferkitError, match="rows"):
        linear_probes({"a": sets["dim2"], "b": sets["dim5"][:-1]}, labels)


# ----------------------------------------------------------------------------------- the decision


def cut_features(separable: str, n_per_class=30, seed=0):
    """Three cuts, shallow to deep; only `separable` separates the classes."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    out = {}
    for name, dim in (("early", 8), ("middle", 16), ("deep", 32)):
        features = rng.normal(size=(len(labels), dim))
        if name == separable:
            features[np.arange(len(labels)), labels] += 6.0
        out[name] = features
    return out, labels


def test_decision_similar_when_deepest_separates_best():
    features, labels = cut_features("deep")
    scores = score_cut_points(features, labels)
    assert [s.cut for s in scores] == ["early", "middle", "deep"]
    assert [s.feature_dim for s in scores] == [8, 16, 32]
    similar, cut, confidence, reasons = similarity_decision(scores)
    assert similar and cut is None and confidence > 0.99
    assert any("LogME agrees" in r for r in reasons)


def test_decision_truncates_at_the_separable_earlier_cut():
    features, labels = cut_features("middle")
    similar, cut, confidence, _ = similarity_decision(score_cut_points(features, labels))
    assert not similar and cut == "middle" and confidence > 0.99


def test_decision_confidence_formula_and_close_calls():
    def pair(deep_acc, early_acc, deep_logme=1.0, early_logme=0.0):
        return [
            CutScore("early", early_logme, early_acc, 8, 0.04),
            CutScore("deep", deep_logme, deep_acc, 32, 0.03),
        ]

    # earlier better by 7 points; boundary at -2 -> d = -0.05 = exactly one SE of the difference (0.05)
    similar, cut, confidence, _ = similarity_decision(pair(0.75, 0.82, deep_logme=0.0, early_logme=1.0))
    assert (similar, cut) == (False, "early")
    assert confidence == pytest.approx(CLOSE_CALL_CONFIDENCE) and confidence == pytest.approx(
        0.6827, abs=1e-4
    )
    # earlier better by exactly the 2-point tolerance: a tie, which goes to similar with zero confidence
    similar, cut, confidence, reasons = similarity_decision(pair(0.5, 0.5 + selector.TRUNCATE_MARGIN))
    assert similar and cut is None and confidence == pytest.approx(0.0, abs=1e-6)
    assert "about as well (the earlier cut 'early' is ahead by less than the margin)" in reasons[2]
    similar, _, _, reasons = similarity_decision(pair(0.6, 0.5))
    assert similar and "separate these classes best" in reasons[2]
    # two SEs on the similar side (d = 0.10), but LogME ranks the earlier cut higher: confidence halved
    similar, _, confidence, reasons = similarity_decision(pair(0.80, 0.72, deep_logme=0.0, early_logme=1.0))
    assert similar and confidence == pytest.approx(0.5 * math.erf(2 / math.sqrt(2)))
    assert any("LogME disagrees" in r for r in reasons)
    # a single cut cannot be compared
    assert similarity_decision(pair(0.8, 0.7)[1:])[:3] == (True, None, 0.0)


def test_best_earlier_cut_breaks_probe_ties_with_logme():
    scores = [
        CutScore("a", 0.5, 0.9, 4, 0.01),
        CutScore("b", 0.7, 0.9, 4, 0.01),
        CutScore("c", 0.0, 0.5, 4, 0.01),
    ]
    assert similarity_decision(scores)[1] == "b"


# ----------------------------------------------------------------------------------------- size


@pytest.mark.parametrize(
    "median,total,expected",
    [
        (SMALL_IMAGES_PER_CLASS - 1, 5_000, "small"),
        (SMALL_IMAGES_PER_CLASS, 5_000, "large"),
        (SMALL_IMAGES_PER_CLASS - 1, 500_000, "small"),  # the median per class decides, not the total
    ],
)
def test_size_thresholds_at_their_boundaries(median, total, expected):
    size, reasons = size_quadrant(card(median, total))
    assert size == expected and reasons


def test_size_reasons_flag_close_calls_tiny_classes_and_imbalance():
    _, reasons = size_quadrant(card(45, 450, minimum=5, imbalance=4.0))
    text = " ".join(reasons)
    assert "close call" in text and "only 5 training images" in text and "4.0x" in text
    _, reasons = size_quadrant(card(300, 3_000))
    assert not any("close call" in r for r in reasons)


def test_size_accepts_an_attribute_card_and_names_missing_fields():
    assert size_quadrant(SimpleNamespace(**card(2_000)))[0] == "large"
    with pytest.raises(TransferkitError, match="imbalance"):
        size_quadrant({k: v for k, v in card(10).items() if k != "imbalance"})


# ---------------------------------------------------------------------------------------- select


def test_select_small_similar_freezes():
    features, labels = cut_features("deep")
    selection = select(card(30, 90), features, labels)
    assert (selection.quadrant, selection.recipe, selection.cut_point) == ("small_similar", "freeze", None)
    assert not selection.close_call and len(selection.scores) == 3 and selection.seconds > 0
    json.dumps(selection.to_dict())


def test_select_assumes_similar_where_no_class_has_two_images_to_probe():
    # 3 images a class: the test and validation splits take one each, training keeps one.
    features, labels = cut_features("early", n_per_class=1)
    selection = select(card(1, 3), features, labels)
    assert (selection.quadrant, selection.recipe, selection.cut_point) == ("small_similar", "freeze", None)
    assert not selection.close_call and selection.scores == () and selection.confidence == 0.0
    assert any("similarity not measured" in reason for reason in selection.reasons)
    with pytest.raises(TransferkitError, match="two classes"):  # the probe itself still refuses
        linear_probe(features["early"], labels)
    given = select(card(1, 3), features, labels, similar=False)  # said by the user: its default cut
    assert (given.quadrant, given.cut_point) == ("small_dissimilar", "middle")  # deepest before the output
    assert any("cut point not measured" in reason for reason in given.reasons)


def test_select_small_dissimilar_truncates_and_large_dissimilar_retrains():
    features, labels = cut_features("early")
    small = select(card(30, 90), features, labels)
    assert (small.quadrant, small.recipe, small.cut_point) == ("small_dissimilar", "truncate", "early")
    large = select(card(5_000), features, labels)
    assert (large.quadrant, large.recipe, large.cut_point) == ("large_dissimilar", "retrain", None)


def test_select_overrides():
    both = select(None, None, None, size="small", similar=True)
    assert (both.recipe, both.scores, both.confidence, both.close_call) == ("freeze", (), 1.0, False)
    features, labels = cut_features("middle")
    told = select(None, features, labels, size="small", similar=False)
    assert (told.recipe, told.cut_point, len(told.scores)) == ("truncate", "middle", 3)
    measured = select(None, features, labels, size="large")
    assert measured.recipe == "retrain" and measured.images_per_class is None
    assert select(card(20), None, None, similar=True).recipe == "freeze"
    with pytest.raises(TransferkitError, match="Choose one of"):
        select(None, None, None, size="medium", similar=True)
    with pytest.raises(TransferkitError, match="features"):
        select(card(50), None, None)


def test_select_flags_a_close_call_and_offers_compare():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    same = rng.normal(size=(40, 6)) + 0.6 * labels[:, None]
    selection = select(card(20, 40), {"early": same, "deep": same.copy()}, labels)
    assert selection.close_call and selection.similar
    assert any("transferkit compare" in r for r in selection.reasons)


# ------------------------------------------------------------------------------ features and plot


def test_extract_cut_features_one_pass_on_the_tiny_backbone():
    import keras

    from transferkit.backbones.registry import get_backbone

    spec = get_backbone("tiny")
    base = spec.build(32)
    images = np.random.default_rng(0).integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    calls = []

    def preprocess(x):
        calls.append(1)
        return x / 127.5 - 1

    one_shot = (images[i : i + 4] for i in range(0, 10, 4))  # a generator can be read only once
    features = extract_cut_features(base, spec.cut_points, one_shot, preprocess)
    assert list(features) == list(spec.cut_points)
    assert [f.shape for f in features.values()] == [(10, 16), (10, 32), (10, 64)]
    assert len(calls) == 1  # traced once: never once per cut, and the short last batch is padded
    direct = keras.Model(base.input, base.get_layer("block2_pool").output)(images / 127.5 - 1, training=False)
    np.testing.assert_allclose(features["block2_pool"], np.mean(direct, axis=(1, 2)), rtol=1e-4, atol=1e-5)
    whole = extract_cut_features(base, ["block3_pool"], images, preprocess)  # 4-D array
    np.testing.assert_allclose(whole["block3_pool"], features["block3_pool"], rtol=1e-5, atol=1e-6)
    with pytest.raises(TransferkitError, match="block9_pool"):
        extract_cut_features(base, ["block9_pool"], [images])
    with pytest.raises(TransferkitError, match="labels separately"):
        extract_cut_features(base, ["block1_pool"], [(images, np.zeros(10))])


@pytest.mark.parametrize("measured", [True, False])
def test_plot_selection_writes_a_png(tmp_path, measured):
    if measured:
        features, labels = cut_features("middle")
        selection = select(card(30, 90), features, labels)
    else:
        selection = select(None, None, None, size="large", similar=True)
    path = plot_selection(selection, tmp_path / "selection.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
    assert [p.name for p in tmp_path.iterdir()] == ["selection.png"]  # no temporary files left


def test_selection_round_trips_through_json():
    features, labels = cut_features("deep")
    data = json.loads(json.dumps(select(card(30, 90), features, labels).to_dict()))
    data["scores"] = tuple(CutScore(**s) for s in data["scores"])
    data["reasons"] = tuple(data["reasons"])
    assert isinstance(Selection(**data), Selection)


def _scores(deep_accuracy, early_accuracy):
    return {"early": (early_accuracy,), "deep": (deep_accuracy,)}


@pytest.mark.parametrize(
    "image_size,quadrant",
    [(None, "small_dissimilar"), (96, "small_dissimilar"), (159, "small_dissimilar"),
     (160, "large_dissimilar"), (224, "large_dissimilar")],
)  # fmt: skip
def test_dissimilar_data_retrains_from_fewer_images_per_class_at_full_resolution(image_size, quadrant):
    features, labels = _separable(60, 6.0, 1.0)  # an earlier cut separates the classes: dissimilar
    selection = select(card(100, 300), features, labels, image_size=image_size)
    assert selection.quadrant == quadrant, selection.reasons
    assert selection.image_size == image_size
    assert Selection(**json.loads(json.dumps(selection.to_dict())) | {"scores": ()}).image_size == image_size
    floor = retrain_images_per_class(image_size)
    assert floor == (RETRAIN_IMAGES_PER_CLASS if quadrant == "small_dissimilar" else SMALL_IMAGES_PER_CLASS)
    if quadrant == "small_dissimilar":
        assert any(f"< {floor}" in reason for reason in selection.reasons), selection.reasons
    # below the size rule's own floor the data is small at any resolution
    assert select(card(45, 135), features, labels, image_size=224).quadrant == "small_dissimilar"


def _separable(n_per_class, noise_deep, noise_early, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n_per_class)
    centres = np.eye(3, 6) * 4
    deep = centres[labels] + rng.normal(0, noise_deep, (len(labels), 6))
    early = centres[labels] + rng.normal(0, noise_early, (len(labels), 6))
    return {"early": early, "deep": deep}, labels


@pytest.mark.parametrize(
    "median,noise_deep,noise_early,quadrant",
    [
        (200, 3.0, 6.0, "large_similar"),  # room to improve on frozen features: fine-tune
        (200, 0.3, 3.0, "small_similar"),  # frozen features already saturate: stay frozen
        (55, 6.0, 1.0, "small_dissimilar"),  # dissimilar, below the retrain floor: truncate
        (100, 6.0, 1.0, "small_dissimilar"),  # still below it (truncation won by 12 points at 102)
        (200, 6.0, 1.0, "large_dissimilar"),  # dissimilar, above it: the whole network trains
        (20, 3.0, 6.0, "small_similar"),  # too few images to fine-tune
    ],
)
def test_large_data_is_kept_frozen_where_moving_the_base_does_not_pay(
    median, noise_deep, noise_early, quadrant
):
    features, labels = _separable(60, noise_deep, noise_early)
    selection = select(card(median, median * 3), features, labels)
    assert selection.quadrant == quadrant, selection.reasons
    deepest = selection.scores[-1].probe_accuracy
    assert (deepest >= SATURATED_PROBE_ACCURACY) == (noise_deep < 1)
    if quadrant == "small_dissimilar":
        assert selection.cut_point == "early" and any(
            str(RETRAIN_IMAGES_PER_CLASS) in r.replace(",", "") for r in selection.reasons
        )
