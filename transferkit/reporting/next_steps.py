"""What to do next, derived from a run's results: weak classes, confused pairs, calibration, close calls.

Each rule reads the held-out metrics, ``interpretation.json`` and ``selection.json`` and, when it
fires, says what it saw and what to do. Commands are marked with backticks.
"""

from __future__ import annotations

from collections.abc import Mapping

from transferkit.reporting.metrics import Metrics

WEAK_F1 = 0.8  # a class below this F1 (or 0.1 below the macro F1) is named as needing images
WEAK_CLASSES_SHOWN = 3
NOISY_SUPPORT = 10  # fewer held-out images of a class than this: its recall is a rough estimate
PAIR_MIN_COUNT, PAIR_MIN_RATE, PAIRS_SHOWN = 2, 0.2, 3
ECE_HIGH = 0.1  # expected calibration error above which probabilities should not be used as-is
WIDE_INTERVAL = 0.15  # 95% interval wider than this many points of accuracy


def next_steps(
    metrics: Mapping[str, Metrics],
    interpretation: Mapping[str, object],
    selection: Mapping[str, object],
    run_name: str = "RUN_DIR",
    has_model: bool = True,
    temperature: Mapping[str, object] | None = None,
    data: str = "DATA",
) -> list[str]:
    """Plain-text advice, most important first; never empty.

    Args:
        metrics: ``{split: Metrics}``, the headline split (held-out test when there is one) first.
        interpretation: the run's ``interpretation.json`` (may be empty).
        selection: the run's ``selection.json`` (may be empty).
        run_name: how to name the run folder in suggested commands (its path).
        has_model: False for a folder without ``model.keras`` (``analyze``'s, or a fit that did
            not finish), which nothing can evaluate.
        temperature: ``metrics.json``'s ``calibration`` record (the temperature fit), if any.
        data: the run's data folder as the suggested ``fit`` and ``compare`` commands give it.
    """
    if not metrics and not has_model:
        return [
            f"{run_name} holds no trained model (an analysis, or a fit that did not finish): "
            f"`transferkit fit --data {data}` trains the recipe the selector chose, "
            f"`transferkit fit --resume {run_name}` finishes an interrupted fit."
        ]
    if not metrics:
        return [f"This run has not been evaluated: run `transferkit evaluate {run_name} --data DATA`."]
    split, headline = next(iter(metrics.items()))
    steps = _split_steps(split, headline, metrics.get("validation"))
    steps += _weak_classes(headline)
    steps += _pairs(interpretation.get("confused_pairs") or [])
    steps += _calibration(interpretation.get("calibration") or {}, temperature or {})
    if selection.get("close_call"):
        steps.append(
            f"The selector's call was close (confidence {float(selection.get('confidence', 0)):.2f}, picked "
            f"'{selection.get('recipe', '?')}'): run `transferkit compare --data {data}` to train the "
            "candidate recipes and keep the one that wins on held-out images."
        )
    return steps or [
        f"Nothing stands out: every class reaches F1 {WEAK_F1} or more and the probabilities are "
        f"calibrated. Ship it: `transferkit export {run_name} --format tflite`."
    ]


def _split_steps(split: str, headline: Metrics, validation: Metrics | None) -> list[str]:
    steps = []
    if split != "test":
        steps.append(
            "There is no held-out test split: the accuracy above is measured on the validation images "
            "that early stopping watched, so it flatters the model. Add a test/ folder, or images: fit "
            "holds a test split out when every class has 3 or more (and `--test-split` is not 0)."
        )
    low, high = headline.accuracy_interval
    if high - low > WIDE_INTERVAL:
        steps.append(
            f"Only {headline.num_samples} {'held-out' if split == 'test' else 'validation'} "
            f"image{'' if headline.num_samples == 1 else 's'}: the "
            "accuracy is known to within about "
            f"±{100 * (high - low) / 2:.0f} percentage points. More held-out images would narrow it."
        )
    if split == "test" and validation is not None and headline.accuracy_interval[1] < validation.accuracy:
        steps.append(
            f"Test accuracy ({headline.accuracy:.1%}) is below validation ({validation.accuracy:.1%}) "
            "beyond its 95% interval: the test images may differ from the training ones, or validation "
            "was over-used; look at the highest-loss images."
        )
    return steps


def _weak_classes(metrics: Metrics) -> list[str]:
    present = {name: s for name, s in metrics.per_class.items() if s["support"] > 0}
    weak = [n for n, s in present.items() if s["f1"] < min(WEAK_F1, metrics.macro_f1 - 0.1) or s["f1"] < 0.5]
    weak = weak or [n for n, s in present.items() if s["f1"] < WEAK_F1]
    weak.sort(key=lambda n: (present[n]["f1"], present[n]["recall"]))
    steps = []
    for name in weak[:WEAK_CLASSES_SHOWN]:
        s = present[name]
        support = int(s["support"])
        images = f"{support} held-out image" + ("" if support == 1 else "s")
        noisy = f" (only {images}: a rough estimate)" if support < NOISY_SUPPORT else ""
        steps.append(
            f"Class '{name}' is weak: F1 {s['f1']:.2f}, recall {s['recall']:.0%}{noisy}. It needs more or "
            "cleaner training images: check its folder for mislabelled or atypical images."
        )
    return steps


def _pairs(pairs: list) -> list[str]:
    steps = []
    for pair in pairs[:PAIRS_SHOWN]:
        count, rate = int(pair["count"]), float(pair["rate"])
        if count < PAIR_MIN_COUNT and rate < PAIR_MIN_RATE:
            continue
        total = round(count / rate) if rate > 0 else count
        steps.append(
            f"'{pair['true']}' is taken for '{pair['predicted']}' in {count} of {total} held-out images "
            f"({rate:.0%}): add images that tell the two apart, and look for images filed under the "
            "wrong one of the two."
        )
    return steps


def _calibration(calibration: Mapping[str, object], temperature: Mapping[str, object]) -> list[str]:
    ece = calibration.get("ece")
    if ece is None or float(ece) <= ECE_HIGH:
        return []
    over = float(calibration.get("overconfidence", 0.0))
    kind = "overconfident" if over > 0 else "underconfident"
    if temperature.get("applied"):
        fix = (
            f"even after the temperature ({float(temperature['temperature']):.2f}) fitted on "
            f"{temperature.get('images')} validation images; more validation images would fit it better"
        )
    elif temperature.get("reason"):
        fix = f"and were not calibrated: {temperature['reason']}"
    else:
        fix = 'calibrate them first: [head] calibration = "temperature" in the recipe'
    return [
        f"The probabilities are {kind} (ECE {float(ece):.2f}; mean confidence is {abs(over):.0%} "
        f"{'above' if over > 0 else 'below'} accuracy), {fix}. Do not threshold on them as they are."
    ]
