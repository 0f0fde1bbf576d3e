# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Use the model in an app
#
# **What this teaches:** how an app trains without parsing stdout (progress events), loads
# `model.keras` in a fresh process with Keras alone, classifies a batch of images, exports the
# model to TFLite and ONNX, runs those files the way a phone or server app would (LiteRT,
# onnxruntime) and checks they agree with the Keras model.
#
# **Run time:** about 4 minutes on two CPU cores (faces vs. non-faces from Labeled Faces in the
# Wild, offline). Needs `pip install -e ".[export]"` (in the transferkit folder). `TRANSFERKIT_SMOKE=1` runs the same
# cells in under a minute with the tiny test backbone and a synthetic folder (the test suite does
# this).

# %%
import os
from pathlib import Path

import transferkit
from transferkit.testing import make_image_folder

SMOKE = os.environ.get("TRANSFERKIT_SMOKE") == "1"
work = Path(os.environ.get("TRANSFERKIT_NOTEBOOK_DIR", "notebook_runs"))
if SMOKE:
    data = make_image_folder(work / "data" / "shapes", classes=3, per_class=10)
    options = dict(backbone="tiny", weights="random", epochs=2, selection="fast")
else:
    data = transferkit.export_dataset("lfw_faces", work / "data" / "lfw_faces")
    options = {}

# %% [markdown]
# ## Train, listening to events instead of reading stdout
#
# `progress=` receives small frozen dataclasses: `PhaseStarted`, one `EpochEnded` per epoch
# (with the metrics as a dict), then `Finished`. An app can drive its own progress display or
# log them; `callbacks=[...]` would add its own Keras callbacks the same way.

# %%
def on_event(event):
    if isinstance(event, transferkit.PhaseStarted):
        print(f"phase {event.index + 1}/{event.phases} '{event.phase}': up to {event.epochs} epochs")
    elif isinstance(event, transferkit.EpochEnded) and (event.epoch == 1 or event.epoch % 5 == 0):
        print(f"  epoch {event.epoch}: val_accuracy {event.metrics.get('val_accuracy', float('nan')):.3f}")
    elif isinstance(event, transferkit.Finished):
        print(event.summary)


run = transferkit.fit(str(data), out=work / "runs", verbose=0, progress=on_event, **options)

# %% [markdown]
# ## Prepare images as transferkit did
#
# The model takes raw 0-255 RGB pixels at its input size; normalisation is inside it. Getting
# those pixels is the app's job, and it must do it as training did: transparency composited on
# white (Pillow's `convert("RGB")` makes it black), the image squashed to a square with the
# bilinear filter (Pillow's `resize()` defaults to bicubic), EXIF orientation applied. With
# Pillow and NumPy alone (the README's `load_pixels`; a test checks it against transferkit's
# decoder):

# %%
import inspect

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps


def load_pixels(path, size):
    """An image as transferkit feeds it to its model: upright, transparency on white, RGB, squashed
    to size x size with Pillow's bilinear filter; float32 0-255, shaped [size, size, 3]."""
    with PILImage.open(path) as img:
        img.draft(None, (size, size))  # JPEG: decoded at a reduced scale first, as transferkit does
        rgba = ImageOps.exif_transpose(img).convert("RGBA")
    white = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = PILImage.alpha_composite(white, rgba).convert("RGB")
    return np.asarray(rgb.resize((size, size), PILImage.Resampling.BILINEAR), dtype=np.float32)


# %% [markdown]
# ## Load `model.keras` in a fresh process, with Keras alone
#
# The app below imports neither transferkit nor its recipes: `load_pixels` above prepares the
# images and the class names are in `labels.txt`.

# %%
import subprocess
import sys

app = work / "app.py"
app.write_text(
    '''
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras, numpy as np
from PIL import Image as PILImage
from PIL import ImageOps

'''
    + inspect.getsource(load_pixels)
    + '''
run_dir, folder = sys.argv[1], sys.argv[2]
model = keras.models.load_model(os.path.join(run_dir, "model.keras"))  # safe mode by default
labels = open(os.path.join(run_dir, "labels.txt"), encoding="utf-8").read().splitlines()
size = model.input_shape[1]
paths = sorted(os.path.join(folder, name) for name in os.listdir(folder))[:8]
images = np.stack([load_pixels(p, size) for p in paths])
probabilities = model.predict(images, verbose=0)
for path, row in zip(paths, probabilities):
    best = int(row.argmax())
    record = {"file": os.path.basename(path), "label": labels[best], "p": round(float(row[best]), 3)}
    print(json.dumps(record))
'''
)
first_class = sorted(p for p in Path(data).iterdir() if p.is_dir())[0]
result = subprocess.run(
    [sys.executable, str(app), str(run.run_dir), str(first_class)], capture_output=True, text=True, check=True
)
print(result.stdout)

# %% [markdown]
# ## Can the app trust `p`?
#
# An app that acts on a threshold (`p > 0.9`: accept, else ask a person) needs probabilities that
# mean what they say. `fit` fitted a temperature to the validation images and folded it into the
# model's last layer, so the app above has nothing to do at prediction time; `metrics.json` says
# what it found, or why it fitted none (on the faces here no validation image is wrong, so there
# is nothing to soften), and the report's calibration section shows the reliability diagram on the
# held-out images.

# %%
import json

calibration = json.loads((run.run_dir / "metrics.json").read_text()).get("calibration", {})
print({key: calibration.get(key) for key in ("applied", "temperature", "images", "errors", "reason")})

# %% [markdown]
# ## Batch prediction with transferkit
#
# `transferkit.predict` takes files or folders; `tta=True` averages each image with its flip
# and five crops, those the run trained with (slower; `transferkit evaluate RUN --data DIR --tta` tells whether it helps);
# `contact_sheet=` draws the images with their predicted labels.

# %%
from IPython.display import Image, display

rows = transferkit.predict(run.run_dir, str(first_class), tta=True, contact_sheet=work / "sheet.png")
for row in rows[:5]:
    print(Path(row["path"]).name, row["top"])
display(Image(filename=str(work / "sheet.png")))

# %% [markdown]
# ## Export to TFLite and ONNX
#
# Each export runs the new file on the run's held-out test images and compares it with
# `model.keras`: top-1 agreement, both accuracies, the largest probability difference, file size
# and latency. It fails (non-zero exit in the CLI) if accuracy drops by more than `max_drop`.
# How much quantization costs depends on the model, so `quantize="auto"` tries int8, then dynamic,
# float16 and float32 on the validation images and keeps the first within `max_drop`.
# The random-weight smoke model has no accuracy worth guarding, so the smoke run allows any drop.

# %%
max_drop = 1.0 if SMOKE else 0.01
tflite = transferkit.export(run.run_dir, "tflite", quantize="auto", max_drop=max_drop)
onnx = transferkit.export(run.run_dir, "onnx", max_drop=max_drop)

# %% [markdown]
# ## Run the exported files as an app would
#
# LiteRT (`ai-edge-litert`) for the `.tflite` file, onnxruntime for the `.onnx` file; the labels
# file written next to each. Same images, prepared by the same `load_pixels`, as `model.keras` takes.

# %%
import keras
import onnxruntime
from ai_edge_litert.interpreter import Interpreter

model = keras.models.load_model(run.run_dir / "model.keras")
size = model.input_shape[1]
paths = sorted(str(p) for p in first_class.iterdir())[:8]
images = np.stack([load_pixels(p, size) for p in paths])


def run_tflite(path, images):
    """One image at a time, as on a phone: the converted graph takes a batch of one."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for image in images:
        interpreter.set_tensor(source["index"], image[None])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(target["index"])[0])
    return np.stack(rows)


def run_onnx(path, images):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


keras_top1 = model.predict(images, verbose=0).argmax(axis=1)
labels = tflite.labels_path.read_text(encoding="utf-8").splitlines()
outputs = {f"tflite {tflite.quantize}": run_tflite(tflite.path, images), "onnx": run_onnx(onnx.path, images)}
for name, probabilities in outputs.items():
    agreement = float((probabilities.argmax(axis=1) == keras_top1).mean())
    first = labels[probabilities[0].argmax()]
    print(f"{name:<15} agrees with model.keras on {agreement:.0%} of {len(images)} images; first: {first}")
for result in (tflite, onnx):
    print(result.format, result.quantize, f"{result.file_bytes / 1e6:.2f} MB", result.parity.summary())
