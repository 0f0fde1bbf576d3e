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
# # transferkit quick start
#
# Real transfer learning in a few lines: export a built-in dataset of real photos (faces vs. non-faces
# from Labeled Faces in the Wild), let transferkit measure how large and how ImageNet-like it is,
# train, look at the report, and predict.
#
# Set `TRANSFERKIT_SMOKE=1` to run the same cells in seconds with the tiny test backbone and a
# synthetic folder (the test suite does this).

# %%
import os
from pathlib import Path

import transferkit
from transferkit.testing import make_image_folder

SMOKE = os.environ.get("TRANSFERKIT_SMOKE") == "1"
work = Path(os.environ.get("TRANSFERKIT_NOTEBOOK_DIR", "notebook_runs"))
if SMOKE:
    data = make_image_folder(work / "data" / "shapes", classes=3, per_class=10)
    options = dict(backbone="tiny", weights="random", epochs=2)
else:
    data = transferkit.export_dataset("lfw_faces", work / "data" / "lfw_faces")
    options = {}
sorted(p.name for p in Path(data).iterdir())

# %% [markdown]
# ## Fit
#
# No `size`/`similar` given: transferkit measures them. The printout shows the dataset card, the
# per-cut-point evidence, the recipe it picked, and what trains in each phase; then one progress
# bar per phase and the held-out result. (`verbose=2` prints one line per epoch instead; `verbose=0`
# nothing.)

# %%
run = transferkit.fit(str(data), out=work / "runs", **options)
print(run.recipe.name, run.recipe.strategy, f"{run.headline} accuracy {run.metrics.accuracy:.3f}")

# %% [markdown]
# ## What the selector saw
#
# `run.selection` holds the decision and its numbers (also saved as `selection.json`).

# %%
selection = run.selection
print(selection.quadrant, "confidence", round(selection.confidence, 2), "close call" if selection.close_call else "")
for score in selection.scores:
    print(f"{score.cut:<28} probe accuracy {score.probe_accuracy:.3f}  LogME {score.logme:.3f}")

# %% [markdown]
# ## Learning curves and confusion matrix
#
# Every run folder has `curves.png`, `confusion.png` and a self-contained `report.html`.

# %%
from IPython.display import Image, display

display(Image(filename=str(run.run_dir / "curves.png")))
display(Image(filename=str(run.run_dir / "confusion.png")))

# %% [markdown]
# ## Predict
#
# The saved model takes raw 0-255 RGB pixels; preprocessing is inside the graph.

# %%
first_class = sorted(p for p in Path(data).iterdir() if p.is_dir())[0]
for row in transferkit.predict(run.run_dir, str(first_class), top_k=2)[:5]:
    print(Path(row["path"]).name, row["label"], round(row["probability"], 3))

# %% [markdown]
# ## Use it without transferkit
#
# A downstream app needs only Keras:

# %%
import keras
import numpy as np

model = keras.models.load_model(run.run_dir / "model.keras")  # safe mode is on by default
size = model.input_shape[1]
print(model.predict(np.zeros((1, size, size, 3), "float32"), verbose=0).round(3))
