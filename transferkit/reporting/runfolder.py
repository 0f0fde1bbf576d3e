"""The run folder: everything a run leaves behind, written atomically, and read back.

``runs/<name>/``: ``model.keras`` (raw 0-255 RGB in, probabilities out; plain
``keras.models.load_model`` in safe mode loads it), ``labels.txt``, the resolved
``recipe.toml``, ``run.json`` (source, backbone, weights, seed, timings, versions),
``dataset_card.json``, ``history.csv``, ``metrics.json``, ``predictions.npz`` (the test split's,
or the validation split's without one) and ``validation_predictions.npz`` (beside a test split's),
``curves.png``, ``confusion.png``, ``report.html``, ``timings.json``; plus ``state.json``,
``checkpoints/`` and ``backup/`` while training.
"""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import keras

from transferkit.console import resume_command
from transferkit.errors import TransferkitError, setting
from transferkit.fileio import atomic_path, write_json, write_text


def require_name_free(out: str | Path, name: str) -> None:
    """Refuse a run name that is taken under ``out``, saying whether that run finished: ``fit``
    asks before it scans the data, and again as it creates the folder."""
    run_dir = Path(out) / safe_name(name)
    if _finished(run_dir):
        raise TransferkitError(
            f"The run folder {run_dir} holds a finished run. Pick another {setting('name')} (or remove "
            "that folder to train it again)."
        )
    if run_dir.exists():
        raise TransferkitError(
            f"The run folder {run_dir} already exists. Pick another {setting('name')}, or continue an "
            f"interrupted fit with `{resume_command(run_dir)}`."
        )


def new_run_dir(out: str | Path, data: str, recipe_name: str, name: str | None = None) -> Path:
    """A fresh folder under ``out``; the default name is ``<data>-<recipe>-<timestamp>``.

    The name is reduced to safe characters so no class or folder name can escape ``out``. A
    default name that is taken gets ``-2``, ``-3``, ...; a ``name`` the caller chose that is taken
    is an error, so a script that goes on to ``export out/name`` never reads an older run.
    """
    if name is not None:
        run_dir = Path(out) / safe_name(name)
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError:
            require_name_free(out, name)
            raise
        return run_dir
    stem = Path(data.rstrip("/")).name or "data"
    safe = safe_name(f"{stem}-{recipe_name}-{datetime.now():%Y%m%d-%H%M%S}")
    run_dir, suffix = Path(out) / safe, 1
    while True:
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:  # a run of the same second (two fits at once)
            suffix += 1
            run_dir = Path(out) / f"{safe}-{suffix}"


def _finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that finished (its ``run.json`` says so)."""
    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("status") == "finished"
    except (OSError, ValueError, AttributeError):
        return False


def safe_name(name: str) -> str:
    """``name`` reduced to safe characters for a folder name (nothing can escape ``out``)."""
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "run"


def save_model(model: keras.Model, run_dir: Path) -> Path:
    """Save ``model.keras`` atomically: a kill mid-write leaves the previous file or none."""
    path = run_dir / "model.keras"
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def save_labels(class_names: tuple[str, ...], run_dir: Path) -> None:
    """``labels.txt``: one class name per line, in output order (also kept in run.json)."""
    write_text(run_dir / "labels.txt", "".join(f"{name}\n" for name in class_names))


def save_run_info(run_dir: Path, info: dict) -> None:
    info = {**info, "python": platform.python_version(), "keras": keras.__version__}
    write_json(run_dir / "run.json", info)


def read_run_info(run_dir: Path) -> dict:
    """``run.json`` of a run folder; a clear error when the folder is not one."""
    path = Path(run_dir) / "run.json"
    if not Path(run_dir).is_dir():
        raise TransferkitError(
            f"There is no folder {str(run_dir)!r}. fit writes its run folder once the data is "
            "loaded, before the selector measures anything: a fit stopped before then left "
            "nothing to resume or use; run the same fit command again."
        )
    if not path.exists():
        beside = run_beside(Path(run_dir))
        raise TransferkitError(f"{str(run_dir)!r} is not a transferkit run folder (no run.json){beside}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise TransferkitError(f"{path} is damaged ({error}); the run cannot be read back.") from None


@dataclass(frozen=True)
class SavedRun:
    """A finished run loaded back for ``evaluate`` and ``predict``."""

    run_dir: Path
    model: keras.Model
    class_names: tuple[str, ...]
    info: dict

    @property
    def image_size(self) -> int:
        return int(self.model.input_shape[1])

    @property
    def white_level(self) -> int | None:
        """What its high-bit-depth training images were scaled from (None: none, or an older run)."""
        return self.info.get("white_level")

    def predict(self, inputs: list[str] | str, **options) -> list[dict]:
        """Classify image files or folders with this loaded model, decoded as training decoded
        them: :func:`transferkit.predict` without loading ``model.keras`` again on every call.

        Example:
            >>> run = transferkit.load_run("runs/pets")  # doctest: +SKIP
            >>> run.predict(["photo.jpg"], top_k=1)[0]["label"]  # doctest: +SKIP
            'cat'
        """
        from transferkit.prediction import predict  # imports this module

        return predict(self, inputs, **options)


def load_run(run_dir: str | Path, *, as_trained: bool = False) -> SavedRun:
    """Load a run folder's model (Keras safe mode) and labels.

    A run trained in float16 (on a GPU) and loaded where there is none computes in float32, with
    the same weights (:func:`transferkit.training.device.for_this_machine`): ``as_trained=True``
    keeps the layers' precision as saved.

    Returns:
        A :class:`SavedRun`: ``model`` (raw 0-255 RGB in, probabilities out; ``model.predict``
        classifies), ``class_names`` (output index -> name), ``image_size``, ``white_level`` and
        ``info`` (``run.json``). ``run.predict(paths)`` (or ``transferkit.predict(run_dir, paths)``)
        decodes files as training did.

    Raises:
        TransferkitError: the folder holds no finished run, or its labels do not fit its model.
    """
    if not isinstance(run_dir, str | os.PathLike):
        raise TransferkitError(f"A run folder is a path, e.g. 'runs/pets-auto-...'; received {run_dir!r}.")
    run_dir = Path(run_dir)
    model_path = run_dir / "model.keras"
    if not model_path.exists():
        if beside := run_beside(run_dir):
            raise TransferkitError(f"No model.keras in {str(run_dir)!r}{beside}.")
        started = (run_dir / "state.json").exists() or (run_dir / "run.json").exists()
        hint = f" (the fit did not finish: `{resume_command(run_dir)}` finishes it)" if started else ""
        raise TransferkitError(
            f"No model.keras in {str(run_dir)!r}{hint}. Give the folder of a finished run."
        )
    model = keras.models.load_model(model_path, safe_mode=True, compile=False)
    if not as_trained:
        from transferkit.training.device import for_this_machine  # training imports this module

        model = for_this_machine(model)
    info = read_run_info(run_dir) if (run_dir / "run.json").exists() else {}
    class_names = tuple(info.get("class_names") or _read_labels(run_dir))
    if len(class_names) != model.output_shape[-1]:
        raise TransferkitError(
            f"{run_dir}/labels.txt lists {len(class_names)} classes "
            f"but the model has {model.output_shape[-1]} outputs."
        )
    return SavedRun(run_dir=run_dir, model=model, class_names=class_names, info=info)


def run_beside(folder: Path) -> str:
    """Where the run is when ``folder`` is a folder transferkit wrote that is no run of its own, as
    a clause to end an error with ("" otherwise): an averaged run's ``partner/`` (its ``state.json``
    read as an unfinished fit, and the ``--resume`` that message asked for refuses it) or a
    ``compare`` folder."""
    from transferkit.training.averaging import PARTNER_DIR  # training imports this module

    if folder.name == PARTNER_DIR and (folder.parent / "run.json").exists():
        return (
            f": it holds the second network of the run in {str(folder.parent)!r}, whose model.keras "
            "averages both; give that folder (to --resume too)"
        )
    if (folder / "comparison.json").exists():
        runs = sorted(str(sub) for sub in folder.iterdir() if (sub / "run.json").exists())
        return f": it is a `transferkit compare` folder; give one of its runs ({', '.join(runs)})"
    return ""


def _read_labels(run_dir: Path) -> list[str]:
    path = run_dir / "labels.txt"
    if not path.exists():
        raise TransferkitError(f"No labels.txt in {str(run_dir)!r}.")
    return path.read_text(encoding="utf-8").splitlines()
