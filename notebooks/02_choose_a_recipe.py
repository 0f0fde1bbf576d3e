# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Which transfer recipe? Measure, then check
#
# transferkit decides between the four classic recipes (freeze, truncate, fine-tune, retrain) from
# measurements instead of folklore. This notebook shows the evidence (`analyze`), then trains all four
# recipes side by side (`compare`) to see whether the pick was right: the **regret** is how many
# accuracy points the pick lost to the best recipe.
#
# The data is the Animal-MNIST silhouettes (real images shipped in a PyPI package), a case where the
# folk rule and the measurement disagree. `TRANSFERKIT_SMOKE=1` runs the same cells in seconds with the
# tiny test backbone and a synthetic folder.

# %%
import os
from pathlib import Path

import transferkit
from transferkit.testing import make_image_folder

SMOKE = os.environ.get("TRANSFERKIT_SMOKE") == "1"
work = Path(os.environ.get("TRANSFERKIT_NOTEBOOK_DIR", "notebook_runs"))
if SMOKE:
    data = make_image_folder(work / "data" / "shapes", classes=3, per_class=12)
    options = dict(backbone="tiny", weights="random")
    budget = dict(epochs=1)
else:
    data = transferkit.export_dataset("animal_mnist", work / "data" / "animal_mnist", per_class=100)
    options = dict(image_size=128)
    budget = {}

# %% [markdown]
# ## The evidence
#
# One forward pass of a sample through the pretrained backbone; pooled features at each cut point are
# scored with a cross-validated linear probe and LogME.

# %%
analysis = transferkit.analyze(str(data), out=work / "runs", verbose=0, **options)
selection = analysis.selection
print(analysis.card.summary())
print()
for score in selection.scores:
    print(f"{score.cut:<26} dim {score.feature_dim:>5}  probe {score.probe_accuracy:.3f}  LogME {score.logme:.3f}")
print()
print("pick:", selection.quadrant, "->", selection.recipe, f"(confidence {selection.confidence:.2f})")
for reason in selection.reasons:
    print(" -", reason)

# %%
from IPython.display import Image

Image(filename=str(analysis.run_dir / "selection.png"))

# %% [markdown]
# ## The check
#
# `compare` trains every recipe on the same split with the same seed, and reports accuracy, time,
# memory and the selector's regret.

# %%
comparison = transferkit.compare(str(data), out=work / "runs", verbose=0, **options, **budget)
print(comparison.table())

# %%
Image(filename=str(comparison.run_dir / "comparison.png"))
