"""Exact resume with the full optimizer: AdamW decay, layer-wise rates and a warm-up schedule."""

import dataclasses

import pytest
import test_reliability as reliability


@pytest.fixture(autouse=True, scope="module")
def _phases_with_every_optimizer_feature():
    tune = dataclasses.replace(
        reliability.PHASES[1], schedule="warmup_cosine", weight_decay=0.05, lr_decay_per_block=0.5
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reliability, "PHASES", (reliability.PHASES[0], tune))
        assert reliability._exact_recipe().phases[1] == dataclasses.replace(tune, patience=2)
        yield


uninterrupted_exact_run = reliability.uninterrupted_exact_run
test_resume_with_adamw_layerwise_rates_and_warmup_is_exact = (
    reliability.test_resume_restores_weights_optimizer_schedule_and_early_stopping_exactly
)
