"""fastai side of ``peer_fastai.py``: one ``vision_learner(...).fine_tune(E)`` run, in its own process.

Runs in the separate ``.venv-peer`` environment (torch + torchvision + fastai; ``make
benchmark-peer`` creates it) and imports nothing from transferkit. ``peer_fastai.py`` starts it
as a subprocess and measures the process's wall time and peak RSS from outside; this script
reports what only it can see (the ``fine_tune`` wall time, validation history, test accuracy)
as one JSON file.

fastai as its documentation shows it, with two adjustments that keep it offline and on the same
weights as transferkit:

* The architecture is a callable returning ``torchvision.models.mobilenet_v2()`` with the
  ImageNet state dict loaded from the local ``.pth`` (the file transferkit converts its offline
  MobileNetV2 weights from). It ignores ``pretrained``, so fastai's ``pretrained=True`` path
  (ImageNet normalisation added to the batch transforms, body frozen for the first epoch) runs
  unchanged and nothing is downloaded.
* fastai 2.8's ``model_meta`` has no entry for MobileNetV2, and without one ``vision_learner``
  cannot find the cut (the network has no pooling module) and adds no normalisation. The entry
  registered here is the one fastai uses for its other torchvision models: cut off the
  classifier (``cut=-1``, the body is ``features``), body/head parameter groups, ImageNet stats.

Any attempt to open a network connection raises, and ``TORCH_HOME`` is checked to be empty
afterwards, so a run that would have downloaded something fails instead.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path

_START = time.perf_counter()
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _no_network() -> None:
    """Make every TCP/UDP connection attempt fail loudly (local sockets still work)."""
    original = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise RuntimeError(f"fastai worker tried to open a network connection to {address!r}")
        return original(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with train/ val/ test/ splits")
    parser.add_argument("--weights", type=Path, required=True, help="torchvision mobilenet_v2 .pth")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=5, help="fine_tune(epochs)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def main() -> int:
    args = parse_args()
    os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="peer-torch-home-"))
    _no_network()
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)

    import fastai
    from fastai.vision.all import (
        ImageDataLoaders,
        Resize,
        accuracy,
        aug_transforms,
        default_split,
        imagenet_stats,
        model_meta,
        set_seed,
        vision_learner,
    )

    state_dict = torch.load(args.weights, map_location="cpu")

    def mobilenet_v2_imagenet(pretrained: bool = True, **kwargs):
        model = torchvision.models.mobilenet_v2()
        model.load_state_dict(state_dict)
        return model

    model_meta[mobilenet_v2_imagenet] = {"cut": -1, "split": default_split, "stats": imagenet_stats}

    set_seed(args.seed, reproducible=True)
    dls = ImageDataLoaders.from_folder(
        args.data,
        train="train",
        valid="val",
        item_tfms=Resize(args.image_size),
        batch_tfms=aug_transforms(),
        bs=args.batch_size,
        num_workers=0,
        seed=args.seed,
        device=torch.device("cpu"),
    )
    learn = vision_learner(dls, mobilenet_v2_imagenet, metrics=accuracy, pretrained=True)
    print(
        f"fastai {fastai.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{torch.get_num_threads()} threads; classes {list(dls.vocab)}; "
        f"{len(dls.train_ds)} train / {len(dls.valid_ds)} val images",
        flush=True,
    )

    history: list[dict] = []
    fits = [0]  # fine_tune = fit(1) with the body frozen, then fit(E) unfrozen; epochs restart at 0

    def log_epoch(values) -> None:  # fastai's Recorder: [epoch, train_loss, valid_loss, accuracy, time]
        values = list(values)
        if values and values[0] == 0:
            fits[0] += 1
        fit = fits[0]
        phase = "frozen" if fit == 1 else "unfrozen"
        try:
            epoch, train_loss, valid_loss, acc, took = values
        except ValueError:  # another fastai version's layout
            history.append({"fit": fit, "phase": phase, "values": [str(v) for v in values]})
            print(f"{phase}: {values}", flush=True)
            return
        entry = {"fit": fit, "phase": phase, "epoch": epoch, "train_loss": float(train_loss)}
        entry.update(valid_loss=float(valid_loss), accuracy=float(acc), time=str(took))
        history.append(entry)
        print(
            f"{phase} epoch {epoch + 1}: train_loss {train_loss:.4f} valid_loss {valid_loss:.4f} "
            f"accuracy {acc:.4f} ({took})",
            flush=True,
        )

    started = time.perf_counter()
    with learn.no_bar():  # without the progress bar the Recorder hands each epoch's values to learn.logger
        learn.logger = log_epoch
        learn.fine_tune(args.epochs)
    fine_tune_seconds = time.perf_counter() - started

    test_files = image_files(args.data / "test")
    started = time.perf_counter()
    test_dl = learn.dls.test_dl(test_files, with_labels=True)
    with learn.no_bar():
        preds, targets = learn.get_preds(dl=test_dl)
    test_seconds = time.perf_counter() - started
    correct = int((preds.argmax(dim=1) == targets).sum())

    torch_home = Path(os.environ["TORCH_HOME"])
    downloaded = sorted(str(p) for p in torch_home.rglob("*") if p.is_file()) if torch_home.exists() else []
    result = {
        "fastai": fastai.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "classes": list(dls.vocab),
        "train_images": len(dls.train_ds),
        "val_images": len(dls.valid_ds),
        "test_images": len(test_files),
        "test_correct": correct,
        "test_accuracy": correct / len(test_files) if test_files else None,
        "val_accuracy": history[-1].get("accuracy") if history else None,
        "history": history,
        "fine_tune_seconds": fine_tune_seconds,
        "test_seconds": test_seconds,
        "worker_seconds": time.perf_counter() - _START,
        "torch_home_files": downloaded,
    }
    args.out.write_text(json.dumps(result, indent=2))
    if downloaded:
        print(f"error: files appeared under TORCH_HOME: {downloaded}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
