"""``transferkit`` command line: each command parses flags, calls the Python API, prints.

Errors a user can fix print one line on stderr and exit with status 2; Ctrl-C and SIGTERM
stop cleanly and say how to resume.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import gc
import io
import json
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

import click

from transferkit.console import resume_command
from transferkit.errors import QualityGateError, TransferkitError, TransferkitWarning, on_command_line
from transferkit.exporting.formats import DEFAULT_MAX_DROP, FORMATS, QUANTIZE_CHOICES
from transferkit.prediction import DEFAULT_TOP_K
from transferkit.recipes import DISTRIBUTIONS, FILL_MODES, PRECISIONS
from transferkit.runtime.tf_logging import debugging, import_quietly
from transferkit.selection.quadrants import PROVISIONAL, QUADRANTS, SIZE_CHOICES
from transferkit.selection.trials import SELECTION_MODES

BACKBONE_HELP = "Backbone name (see `transferkit backbones`)."
TTA_HELP = (
    "Test-time augmentation: average over the image, its flip and five crops, those of them the run "
    "trained with (slower)."
)
MIN_ACCURACY_HELP = (
    "CI gate: exit with status 3, after writing everything, when the held-out accuracy is below this."
)


_HELP_OPTIONS = ("-h", "--help")
BATCH_SIZE_HELP = "Images per training step (default: the recipe's, 32)."
_CONTEXT_SETTINGS = {"help_option_names": list(_HELP_OPTIONS), "max_content_width": 100}


class _Command(click.Command):
    """A command that imports TensorFlow once its arguments are parsed: ``--help`` and a usage
    error (a mistyped flag, a missing value) answer at once instead of after TensorFlow's 4-5 s."""

    def invoke(self, ctx: click.Context):
        _import_tensorflow_quietly()
        return super().invoke(ctx)


@contextlib.contextmanager
def _own_warnings_as_lines() -> Iterator[None]:
    """Print a :class:`TransferkitWarning` as its message alone, one line on stderr (Python shows
    a warning as two: where it was raised, then the source line); other warnings as Python does."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, TransferkitWarning):
            click.echo(str(message), err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


class _Group(click.Group):
    """Turns known errors into one clear line and an exit code instead of a traceback."""

    command_class = _Command
    group_class = type  # subgroups (``datasets``) are _Group too

    def invoke(self, ctx: click.Context):
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            with on_command_line(), _own_warnings_as_lines():  # messages name settings by their flags
                return super().invoke(ctx)
        except TransferkitError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt as interrupt:
            run_dir = getattr(interrupt, "run_dir", None)  # fit sets it once its run folder exists
            resume = (
                f" What was finished is saved: `{resume_command(run_dir, shell=True)}` continues."
                if run_dir
                else ""
            )
            click.echo(f"\nInterrupted.{resume}", err=True)
            sys.exit(130)
        except BrokenPipeError as error:  # e.g. `transferkit predict ... | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            _pipe_closed(getattr(error, "run_dir", None))
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as error:  # a bug, not a user error: one line unless asked for more
            if isinstance(error, OSError) and error.errno in _STORAGE_ERRORS:
                _storage_error(error)
            if os.environ.get("TRANSFERKIT_DEBUG"):
                traceback.print_exc()
            else:
                click.echo(
                    f"Internal error: {type(error).__name__}: {_first_line(error)} "
                    "(set TRANSFERKIT_DEBUG=1 for the traceback)",
                    err=True,
                )
            sys.exit(1)


def _first_line(error: Exception, width: int = 400) -> str:
    """An error's message cut to its first line and ``width`` characters: a converter's message
    can carry kilobytes of compiler diagnostics (the traceback, on request, has all of it)."""
    lines = str(error).strip().splitlines() or [""]
    line = lines[0] if len(lines[0]) <= width else lines[0][: width - 1] + "…"
    return line + (" [...]" if len(lines) > 1 or line != lines[0] else "")


# Errors of the disk or folders a command uses: the user can fix them, so they get one line.
_STORAGE_ERRORS = {
    errno.ENOSPC: "Free some space or choose another --out",
    errno.EDQUOT: "Free some space or choose another --out",
    errno.EROFS: "It is on a read-only file system: choose a folder you can write to",
    errno.EACCES: "Check its permissions, or choose a folder you can write to",
    errno.EPERM: "Check its permissions, or choose a folder you can write to",
    errno.ENOTDIR: "A part of that path is a file, not a folder",
    errno.ENOENT: "Check the path, or choose a folder you can write to",
}


def _storage_error(error: OSError) -> None:
    """One line for a file operation the disk or a folder refused, then exit 2.

    A full disk exits with ``os._exit``: after a failed HDF5 write (a checkpoint), h5py's
    finalizers at interpreter exit crashed the process (a segmentation fault; TensorFlow 2.21,
    h5py 3). Every temporary file is removed by then (:func:`transferkit.fileio.atomic_path`).
    """
    where = f": {error.filename}" if error.filename else ""
    run_dir = getattr(error, "run_dir", None)  # fit sets it: the folder it was writing
    resume = (
        f"; `{resume_command(run_dir, shell=True)}` continues from the last finished epoch" if run_dir else ""
    )
    hint = _STORAGE_ERRORS[error.errno]
    click.echo(f"Error: {os.strerror(error.errno)}{where}. {hint}{resume}.", err=True)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)
    sys.exit(2)


def _pipe_closed(run_dir) -> None:
    """Exit once stdout's reader has gone (``| head``): 0 where the output was the result and the
    reader took what it wanted (predict). A fit (``run_dir``: it was writing one) prints progress
    and stopped with its pipe, unfinished: it says so on stderr and exits with SIGPIPE's status,
    where a silent 0 read as a finished run to the shell (``pipefail``) and to the user."""
    if run_dir is None:
        sys.exit(0)
    if (Path(run_dir) / "run.json").exists():
        where = f" What was finished is saved: `{resume_command(run_dir, shell=True)}` continues."
    else:  # it had measured nothing yet, and its empty folder is gone
        where = " Nothing was saved; run the same command again."
    click.echo(f"\nStopped: the output pipe closed before the fit finished.{where}", err=True)
    sys.exit(128 + signal.SIGPIPE)


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up chatter (CUDA probing, oneDNN notes) muted.

    ``import transferkit`` has set TF_CPP_MIN_LOG_LEVEL (unless the user did); the lines printed
    before TensorFlow reads it are muted by :func:`transferkit.runtime.tf_logging.import_quietly`.
    """
    if debugging() or "tensorflow" in sys.modules:
        return
    import_quietly("keras")
    tf = import_quietly("tensorflow")
    # What the imports made lives as long as this process: out of the collector's full passes from
    # here on (transferkit.runtime.collector). A `fit` process (240 images at 128 px, 2-core CPU, three runs
    # each) took 7.8-8.0 s instead of 8.3-8.9 s, the same peak memory.
    gc.freeze()
    # TF's Python-side notes (e.g. "N out of the last M calls triggered tf.function retracing" when
    # `compare` runs several fits in one process) are not actionable for a CLI user.
    tf.get_logger().setLevel("ERROR")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _memory_size(context: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--cache-memory``, refused as a usage error when it is not a size (before anything loads)."""
    from transferkit.data.cache_budget import is_memory_size

    if value is not None and not is_memory_size(value):
        raise click.BadParameter(
            f'{value!r} is not a memory size: "auto", or a number with a unit (B, KB, MB, GB, TB, '
            "KiB, MiB, GiB, TiB), e.g. 512MB, 2GB, 1.5GiB.",
            param=param,
        )
    return value


def _verbosity(quiet: bool) -> int:
    if quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2


@click.group(cls=_Group, context_settings=_CONTEXT_SETTINGS)
@click.version_option(package_name="transferkit")
def main() -> None:
    """Transfer learning for image classification with Keras: measured, fast, honest.

    \b
    Typical use:
      transferkit fit --data ./pets                 # measures size + similarity, picks the recipe
      transferkit fit --data ./pets --size small --similar
      transferkit predict runs/<run> photo.jpg
    """
    # Process set-up (one process per command). Pillow's DecompressionBombWarning (89-179 MP) is
    # noise here: decoding's own limit is Pillow's hard one, reported as a skip reason.
    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@main.command()
@click.option(
    "--data",
    help="Folder of class subfolders (or train/ val/ splits, or images with a labels.csv), or "
    "tfds:NAME[:split]. "
    "Required unless --resume.",
)
@click.option(
    "--size",
    type=click.Choice(SIZE_CHOICES),
    default="auto",
    show_default=True,
    help="Dataset size quadrant; auto measures it.",
)
@click.option(
    "--similar/--dissimilar",
    default=None,
    help="Similarity to ImageNet; measured with the pretrained features when omitted.",
)
@click.option(
    "--recipe",
    help=f"A recipe TOML file or built-in name ({', '.join(QUADRANTS)}); overrides --size/--similar.",
)
@click.option("--backbone", help=BACKBONE_HELP)
@click.option("--weights", help='"imagenet", "random" or a path to a .weights.h5/.h5 file.')
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs for every phase (default: the recipe's).")
@click.option(
    "--image-size", type=click.IntRange(min=8), help="Input size in pixels (default: the backbone's)."
)
@click.option("--batch-size", type=click.IntRange(min=1), help=BATCH_SIZE_HELP)
@click.option(
    "--cache-memory",
    callback=_memory_size,
    help='Memory for decoded images and cached features before they spill to the run folder: "auto" '
    "(a quarter of the RAM, at most half of what is free) or a size, e.g. 512MB, 2GB "
    "(default: the recipe's, auto).",
)
@click.option(
    "--seed", type=int, help="Random seed (default: the recipe's, 1337; recorded in the run folder)."
)
@click.option(
    "--test-split",
    type=click.FloatRange(0, 1, max_open=True),
    help="Fraction of each class held out for the test figures when the data has no test/ folder "
    "(default: the recipe's, 0.15; 0 holds out nothing).",
)
@click.option(
    "--selection",
    type=click.Choice(SELECTION_MODES),
    default="trial",
    show_default=True,
    help="trial: when the measured call is close, train the candidates briefly on the training and "
    "validation splits and keep the winner (selection.json records them); fast: the measured pick.",
)
@click.option("--out", default="runs", show_default=True, help="Parent folder of run folders.")
@click.option(
    "--name",
    help="Run folder name (default <data>-<recipe>-<timestamp>, <data>-auto-<timestamp> when fit picks "
    "the recipe); a taken name is an error.",
)
@click.option("--strict", is_flag=True, help="A class folder without usable images is an error.")
@click.option("--dry-run", is_flag=True, help="Print the resolved plan and exit without training.")
@click.option(
    "--report/--no-report",
    default=True,
    show_default=True,
    help="Draw the figures and write report.html. --no-report writes every number but no picture "
    "(1-1.5 s of CPU less on a small run); `transferkit report RUN_DIR` draws them later.",
)
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), help="Continue an interrupted run.")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="auto: mixed_float16 on a GPU (loss scaling included), float32 on CPU and for random weights; "
    "a resumed run keeps the precision it started in.",
)
@click.option(
    "--distribute",
    type=click.Choice(DISTRIBUTIONS),
    default="auto",
    show_default=True,
    help="auto: every local GPU when there are several; multi-worker: one process per worker of the "
    "TF_CONFIG cluster, each with the same --name (docs/DISTRIBUTED.md). The global batch is "
    "--batch-size x replicas; learning rates scale with the replicas.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--min-accuracy", type=click.FloatRange(0, 1), help=MIN_ACCURACY_HELP)
def fit(
    data,
    size,
    similar,
    recipe,
    backbone,
    weights,
    epochs,
    image_size,
    batch_size,
    cache_memory,
    seed,
    test_split,
    selection,
    out,
    name,
    strict,
    dry_run,
    report,
    resume_dir,
    precision,
    distribute,
    quiet,
    min_accuracy,
):
    """Train a classifier on labelled images; writes a run folder.

    \b
    Examples:
      transferkit fit --data ./pets                        # measures, picks the recipe, trains
      transferkit fit --data ./pets --size small --similar --epochs 5
      transferkit fit --data ./pets --recipe my.toml --dry-run   # the plan, nothing trained
      transferkit fit --resume runs/pets-auto-20261121-101500    # after Ctrl-C or kill

    Exit status: 0 done, 2 a usage or data error, 3 accuracy below --min-accuracy (the run
    folder is kept).
    """
    from transferkit import api

    if not data and not resume_dir:  # --data is optional only because --resume reads it from the run
        raise click.UsageError("Missing option '--data' (or give --resume RUN_DIR).")
    verbose = _verbosity(quiet)
    if resume_dir:
        _refuse_settings_with_resume(click.get_current_context())
        result = api.resume(
            resume_dir,
            data=data,
            precision=precision,
            distribute=distribute,
            dry_run=dry_run,
            verbose=verbose,
        )
    else:
        result = api.fit(
            data,
            size=size,
            similar=similar,
            recipe=recipe,
            backbone=backbone,
            weights=weights,
            epochs=epochs,
            image_size=image_size,
            batch_size=batch_size,
            cache_memory=cache_memory,
            seed=seed,
            test_split=test_split,
            selection=selection,
            out=out,
            name=name,
            strict=strict,
            dry_run=dry_run,
            report=report,
            precision=precision,
            distribute=distribute,
            verbose=verbose,
        )
    if dry_run:
        from transferkit.recipes import dumps

        click.echo("\n# Resolved recipe (nothing was trained)\n" + dumps(result.recipe))
        return
    if not verbose:  # otherwise fit has printed it as its last line
        click.echo(result.summary())
        if result.robustness is not None and result.robustness.fragile:
            click.echo(f"Warning: {result.robustness.warning()}", err=True)
    if result.metrics is None:  # a non-chief worker: the chief's run folder holds the results
        return
    kept = f"run folder {result.run_dir} kept"
    _require_accuracy(result.metrics.accuracy, min_accuracy, f"{result.headline} accuracy", kept)


# What a resumed run may be told: where its data is now, and how to run (not what to train).
RESUME_OPTIONS = {"resume_dir", "data", "precision", "distribute", "dry_run", "quiet", "min_accuracy"}


def _refuse_settings_with_resume(context: click.Context) -> None:
    """A resumed run trains as it started (its recipe.toml and run.json): a setting given beside
    ``--resume`` would be ignored, so it is an error instead."""
    given = [
        f"--{name.replace('_', '-')}"
        for name in context.params
        if name not in RESUME_OPTIONS
        and context.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)
    ]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} cannot be used with --resume: a resumed run keeps the settings it "
            "started with (its recipe.toml). Only --data (the same images, moved), --precision, "
            "--distribute, --dry-run, --quiet and --min-accuracy apply; start a new fit to change them."
        )


def _echo_tta(comparison) -> None:
    """Both accuracies, and whether test-time augmentation helped, before the full table."""
    for label, metrics in (("without TTA", comparison.plain), ("with TTA", comparison.augmented)):
        low, high = metrics.accuracy_interval
        click.echo(f"{label:<12} accuracy {metrics.accuracy:.4f} (95% CI {low:.3f}-{high:.3f})")
    if comparison.views.any:  # otherwise the verdict says there was nothing to average, and why
        click.echo(f"TTA averaged {comparison.views.describe()}")
    click.echo(comparison.verdict() + "; the table below is without TTA\n")


def _require_accuracy(accuracy: float, bar: float | None, what: str, kept: str) -> None:
    """The CI gate: a QualityGateError (exit status 3) when ``accuracy`` is below ``bar``."""
    if bar is not None and accuracy < bar:
        raise QualityGateError(f"{what} {accuracy:.3f} is below --min-accuracy {bar:g} ({kept}).")


@main.command("lr-find")
@click.option("--data", required=True, help="Labelled images, as for fit.")
@click.option("--recipe", help="A recipe TOML file or built-in name (default: measured, as fit does).")
@click.option("--phase", help="The phase's name or 1-based number (default: the last phase).")
@click.option("--backbone", help=BACKBONE_HELP)
@click.option("--weights", help='"imagenet", "random" or a path to a .weights.h5/.h5 file.')
@click.option("--image-size", type=click.IntRange(min=8), help="Input size (default: the backbone's).")
@click.option("--batch-size", type=click.IntRange(min=1), help=BATCH_SIZE_HELP)
@click.option(
    "--start",
    default=1e-7,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Lowest rate tried (the sweep rises geometrically from it).",
)
@click.option(
    "--end",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Highest rate tried (the sweep stops early once the loss diverges).",
)
@click.option("--steps", default=100, show_default=True, type=click.IntRange(min=2), help="Rates tried.")
@click.option("--out", default="lr_find", show_default=True, help="Folder for lr_find.json and lr_find.png.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def lr_find(
    data, recipe, phase, backbone, weights, image_size, batch_size, start, end, steps, out, precision, quiet
):
    """Learning-rate range test for one phase of a recipe: plot and suggested rate.

    The phases before it train first; put the suggestion in the recipe, or write
    learning_rate = "auto" there to have fit run this test itself.

    \b
    Example:
      transferkit lr-find --data ./pets --recipe large_similar   # lr_find/lr_find.png
    """
    from transferkit import api

    if start >= end:
        raise click.UsageError(f"--start ({start:g}) must be below --end ({end:g}).")
    result = api.lr_find(
        data,
        recipe=recipe,
        phase=phase,
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        batch_size=batch_size,
        start=start,
        end=end,
        steps=steps,
        out=out,
        precision=precision,
        verbose=_verbosity(quiet),
    )
    if quiet:  # otherwise lr_find has said it (with the phase and the folder)
        click.echo(f"suggested learning rate: {result.suggestion:.3g}")


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--data",
    help="Labelled folder to evaluate on (its test/ split if present); default: the run's own "
    "held-out images.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: every metric, as predict --format json prints its rows.",
)
@click.option("--json", "as_json", is_flag=True, hidden=True, help="Same as --format json.")
@click.option("--min-accuracy", type=click.FloatRange(0, 1), help=MIN_ACCURACY_HELP)
@click.option("--tta", is_flag=True, help="Also evaluate with test-time augmentation and print both.")
def evaluate(run_dir, data, fmt, as_json, min_accuracy, tta):
    """Evaluate a finished run on labelled images.

    \b
    Examples:
      transferkit evaluate runs/<run>                    # its held-out test split
      transferkit evaluate runs/<run> --data ./new_photos --min-accuracy 0.9

    With --tta, evaluates twice (without and with test-time augmentation) and says whether it
    helped, and whether beyond chance (an exact test on the images only one of the two gets right);
    --min-accuracy checks the model without TTA (what model.keras computes).

    Exit status: 0 done, 2 a usage or data error, 3 accuracy below --min-accuracy.
    """
    from transferkit import api
    from transferkit.evaluation import compare_tta

    comparison = compare_tta(run_dir, data) if tta else None
    metrics = comparison.plain if comparison else api.evaluate(run_dir, data)
    augmented = comparison.augmented if comparison else None
    what = f"accuracy on {metrics.num_samples} images ({metrics.scored})"
    gate = (metrics.accuracy, min_accuracy, what, f"run {run_dir}")
    if fmt == "json" or as_json:
        record = metrics.to_dict()
        if comparison is not None:
            record["tta"] = {
                **augmented.to_dict(),
                "only_plain_right": comparison.only_plain_right,
                "only_tta_right": comparison.only_tta_right,
                "views": comparison.views.describe(),
                "p_value": round(comparison.p_value, 4),
            }
        click.echo(json.dumps(record, indent=2, ensure_ascii=False))
        _require_accuracy(*gate)
        return
    click.echo(f"Scored {metrics.scored}: {metrics.num_samples} images.")
    if comparison is not None:
        _echo_tta(comparison)
    low, high = metrics.accuracy_interval
    interval = f"95% CI {low:.3f}-{high:.3f}"
    click.echo(f"accuracy {metrics.accuracy:.4f} ({interval})")
    if metrics.top5_accuracy is not None:
        click.echo(f"top-5    {metrics.top5_accuracy:.4f}")
    click.echo(f"{'class':<24} precision  recall     f1  support")
    for name, (precision, recall, f1, support) in metrics.per_class_shown().items():
        figures = (
            f"{value:{width}.3f}" if isinstance(value, float) else f"{value:>{width}}"
            for value, width in ((precision, 9), (recall, 7), (f1, 6))
        )
        click.echo(f"{name[:24]:<24} {' '.join(figures)} {support:8d}")
    _require_accuracy(*gate)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="What to write.")
@click.option(
    "--quantize",
    type=click.Choice(QUANTIZE_CHOICES),
    default="none",
    show_default=True,
    help="TFLite only. int8: an integer base (the pooling and head stay float), float input/output, "
    "calibrated on training images. auto: the first of int8, dynamic, float16, none within --max-drop "
    "on the validation images.",
)
@click.option(
    "--out",
    type=click.Path(),
    help="The file (app/model.onnx), or a folder to put it in under its default name (an existing one, "
    "or a path ending in / or without a file extension); a SavedModel: its own folder, new, empty or "
    "an earlier SavedModel. Default: in RUN_DIR/export/.",
)
@click.option(
    "--max-drop",
    type=click.FloatRange(0, 1),
    default=DEFAULT_MAX_DROP,
    show_default=True,
    help="Largest held-out accuracy loss allowed (0.01 = 1 point); more exits with status 3.",
)
@click.option("--data", help="Labelled images to check on (default: the run's test split, else validation).")
@click.option(
    "--quiet", "-q", is_flag=True, help="Print nothing but errors (the exit status says how it went)."
)
def export(run_dir, fmt, quantize, out, max_drop, data, quiet):
    """Export a run's model (SavedModel, TFLite, ONNX) and check it against model.keras.

    \b
    Examples:
      transferkit export runs/<run> --format tflite --quantize int8
      transferkit export runs/<run> --format tflite --quantize auto   # smallest within 1 point
      transferkit export runs/<run> --format onnx --out app/model.onnx

    The exported model takes raw 0-255 RGB like model.keras, prepared as training prepared it:
    transparency on white, squashed to its input size with bilinear resampling (the README's
    load_pixels does it with Pillow alone). Labels travel with it: a
    SavedModel has a `labels` signature and assets/labels.txt; TFLite and ONNX files get
    <name>.labels.txt beside them (ONNX also metadata_props "labels"). The parity check's
    figures go to <name>.export.json. Needs: pip install -e ".[export]" (in the transferkit folder).

    Exit status: 0 passed, 2 a usage error, 3 the export lost more than --max-drop.
    """
    from transferkit.exporting.export import export as run_export

    run_export(
        run_dir, fmt, quantize=quantize, out=out, max_drop=max_drop, data=data, verbose=0 if quiet else 1
    )


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--open", "open_browser", is_flag=True, help="Open the report in the web browser.")
def report(run_dir, open_browser):
    """Rebuild RUN_DIR/report.html, drawing the figures missing from the run folder (all of them
    after fit --no-report)."""
    from transferkit.reporting.html import report as build_report

    path = build_report(run_dir)
    click.echo(str(path))
    if open_browser:
        import webbrowser

        if not webbrowser.open(Path(path).resolve().as_uri()):
            click.echo("No web browser could be started here: open the file above in one.", err=True)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--top-k",
    default=DEFAULT_TOP_K,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many classes to list per image, most likely first.",
)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option(
    "--out",
    "--output",
    "-o",
    "output",
    type=click.Path(dir_okay=False),
    help="Write to a file instead of stdout.",
)
@click.option("--tta", is_flag=True, help=TTA_HELP)
@click.option(
    "--contact-sheet",
    type=click.Path(dir_okay=False),
    help="Also write a PNG grid of the images captioned with their predicted labels.",
)
def predict(run_dir, inputs, top_k, fmt, output, tta, contact_sheet):
    """Classify images (files or folders) with a finished run's model.

    \b
    Examples:
      transferkit predict runs/<run> photo.jpg more_photos/
      transferkit predict runs/<run> more_photos/ --format json --tta -o predictions.json

    Whether --tta helps: `transferkit evaluate RUN_DIR --tta` prints both accuracies on the run's
    held-out images (or on --data LABELLED).

    A file that cannot be read gets a row with its error. Exit status: 0 when any image was
    classified, 2 when none could be.
    """
    from pathlib import Path

    from transferkit import api
    from transferkit.fileio import require_writable_folder, write_text

    if output:  # checked before the predicting, which may take long; created as --contact-sheet is
        require_writable_folder(Path(output).parent, "--out")
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    results = api.predict(run_dir, list(inputs), top_k=top_k, tta=tta, contact_sheet=contact_sheet)
    stream = io.StringIO(newline="")
    if fmt == "json":
        json.dump(results, stream, indent=2, ensure_ascii=False)  # names as written: UTF-8 out
        stream.write("\n")
    else:
        writer = csv.writer(stream)
        writer.writerow(["path", "label", "probability", "top", "error"])
        for row in results:
            top = ";".join(f"{label}:{p:.4f}" for label, p in row.get("top", []))
            prob = f"{row['probability']:.4f}" if "probability" in row else ""
            writer.writerow([row["path"], row.get("label", ""), prob, top, row.get("error", "")])
    if output:
        write_text(output, stream.getvalue())  # whole or not at all
        click.echo(f"Wrote {output}", err=True)
    else:
        sys.stdout.write(stream.getvalue())
    if contact_sheet and any("label" in row for row in results):
        click.echo(f"Wrote {contact_sheet}", err=True)  # stderr: stdout may be the CSV or JSON
    failed = [row for row in results if "label" not in row]
    if failed:  # stderr: stdout may be the CSV or JSON; each row carries its own error
        first = f"{failed[0]['path']}: {failed[0].get('error', '')}"
        if len(failed) == len(results):
            raise TransferkitError(f"None of the {len(results)} input(s) could be classified ({first}).")
        click.echo(f"{len(failed)} of {len(results)} inputs could not be classified (first: {first}).",
                   err=True)  # fmt: skip


@main.command()
def backbones():
    """List the registered backbones."""
    from transferkit.backbones.registry import BACKBONES, DEFAULT_BACKBONE

    click.echo(f"{'name':<26}{'params':>12} {'size':>5} {'min':>4}  {'imagenet':<9} cut points")
    for spec in BACKBONES.values():
        mark = "*" if spec.name == DEFAULT_BACKBONE else " "
        click.echo(
            f"{spec.name + mark:<26}{spec.params:>12,} {spec.default_size:>5} {spec.min_size:>4}  "
            f"{spec.imagenet.kind if spec.imagenet else 'none':<9} {', '.join(spec.cut_points)}"
        )
    click.echo(
        "\n* default. imagenet: keras = downloaded by Keras (needs internet or its cache file); "
        "packaged = converted from a PyPI package (offline)."
    )


@main.command()
@click.argument("backbone")
@click.option("--image-size", type=click.IntRange(min=8), help="Input size (default: the backbone's).")
def inspect(backbone, image_size):
    """Print a backbone's blocks: output shape, parameters, receptive field, cut points."""
    from transferkit.backbones.inspection import block_table

    click.echo(block_table(backbone, image_size))


@main.command("augment-preview")
@click.option("--data", required=True, help="Image folder to sample from.")
@click.option("--recipe", default=PROVISIONAL, show_default=True, help="Recipe whose [augment] table to use.")
@click.option("--fill-mode", type=click.Choice(FILL_MODES), help="Override the fill mode.")
@click.option("--images", "count", default=6, show_default=True, type=click.IntRange(1, 64))
@click.option("--copies", default=5, show_default=True, type=click.IntRange(1, 16))
@click.option("--image-size", default=160, show_default=True, type=click.IntRange(min=16))
@click.option("--out", default="augment_preview.png", show_default=True, type=click.Path(dir_okay=False))
def augment_preview(data, recipe, fill_mode, count, copies, image_size, out):
    """Write a PNG grid: each row an original image and augmented copies."""
    from transferkit.reporting.preview import augment_preview as run_preview

    path = run_preview(
        data, recipe=recipe, fill_mode=fill_mode, count=count, copies=copies, image_size=image_size, out=out
    )
    click.echo(f"Wrote {path}")


@main.command()
@click.option(
    "--data-dir", default="demo_data", show_default=True, help="Where the example image folders go."
)
@click.option(
    "--out", default="runs/demo", show_default=True, help="Parent folder of the demo's run folders."
)
@click.option("--no-controls", is_flag=True, help="Skip the random-weights control runs.")
def demo(data_dir, out, no_controls):
    """Real transfer learning on real images, offline: fit two example datasets and summarise."""
    from transferkit.demo import run_demo, summary

    rows = run_demo(data_dir, out, controls=not no_controls)
    click.echo("\n" + summary(rows))


@main.group()
def weights():
    """Pretrained weights: what is available offline, and importing torch/TF files."""


@weights.command("list")
def weights_list():
    """Show, per backbone, where its ImageNet weights come from right now."""
    from transferkit.backbones.weights import weights_status

    rows = weights_status()
    click.echo(f"{'backbone':<26}{'offline now':<13}source")
    for row in rows:
        click.echo(f"{row['backbone']:<26}{'yes' if row['available_offline'] else 'no':<13}{row['source']}")


@weights.command("import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False))
@click.option("--backbone", required=True, help=BACKBONE_HELP)
@click.option("--out", type=click.Path(dir_okay=False), help="Output .weights.h5 (default: next to SOURCE).")
def weights_import(source, backbone, out):
    """Convert a torchvision .pth or TF frozen graph .pb into a Keras .weights.h5."""
    from transferkit.backbones.weights import import_weights

    path = import_weights(source, backbone, out)
    click.echo(f"Wrote {path}\nUse it with: transferkit fit --backbone {backbone} --weights {path} ...")


@main.group(invoke_without_command=True)
@click.pass_context
def datasets(ctx):
    """Built-in example datasets of real images available offline, and which this machine has."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(datasets_list)


@datasets.command("list")
def datasets_list():
    """List the built-in datasets and which this machine has (the same as `transferkit datasets`)."""
    from transferkit.data.examples import list_datasets

    entries = list_datasets()
    ready = 0
    for entry in entries:
        missing = entry.needs.missing()
        ready += not missing
        here = (
            f"not here: {entry.needs.install(missing)} (missing {', '.join(missing)})" if missing else "ready"
        )
        size = f"{entry.size:>6,} images, {len(entry.classes):>2} classes"
        click.echo(f"{entry.name:<18}{size}, {entry.kind}; {here}")
        click.echo(f"{'':<18}{entry.description}")
        click.echo(f"{'':<18}from {entry.source_package}; licence: {entry.licence}")
    click.echo(f"{ready} of {len(entries)} ready on this machine.")


@datasets.command("export")
@click.argument("name")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--per-class", type=click.IntRange(min=1), help="At most this many images per class.")
def datasets_export(name, directory, per_class):
    """Write built-in dataset NAME as an image folder at DIRECTORY."""
    from transferkit.data.examples import export_dataset

    path = export_dataset(name, directory, per_class=per_class)
    classes = [folder for folder in sorted(path.iterdir()) if folder.is_dir()]
    images = sum(1 for folder in classes for file in folder.iterdir() if file.is_file())
    click.echo(f"Wrote {path}: {images} images in {len(classes)} class folders")


@main.command()
@click.option(
    "--data", required=True, help="Image folder (class subfolders, splits or a labels.csv) or tfds:NAME."
)
@click.option("--backbone", help=BACKBONE_HELP)
@click.option("--weights", help='"imagenet", "random" or a path to a .weights.h5/.h5 file.')
@click.option("--image-size", type=click.IntRange(min=8), help="Input size (default: the backbone's).")
@click.option("--seed", type=int, default=1337, show_default=True, help="Split, sample and probe seed.")
@click.option("--out", default="runs", show_default=True, help="Parent folder of the analysis folder.")
@click.option("--name", help="Folder name (default analyze-<data>-<timestamp>).")
@click.option("--quiet", "-q", is_flag=True, help="No progress: only the decision, its scores and reasons.")
def analyze(data, backbone, weights, image_size, seed, out, name, quiet):
    """Measure which recipe suits the data (one forward pass, no training) and show the evidence.

    \b
    Example:
      transferkit analyze --data ./pets --image-size 160
    """
    from transferkit.selection.analyze import analyze as run_analyze

    verbose = _verbosity(quiet)
    result = run_analyze(
        data,
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        out=out,
        name=name,
        seed=seed,
        verbose=verbose,
    )
    if not verbose:  # otherwise the API printed it
        click.echo(result.summary())


@main.command()
@click.option(
    "--data", required=True, help="Image folder (class subfolders, splits or a labels.csv) or tfds:NAME."
)
@click.option(
    "--recipes",
    default=",".join(QUADRANTS),
    show_default=True,
    help="Comma-separated built-in recipe names or recipe files.",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs for every phase (default: the recipe's).")
@click.option("--backbone", help=BACKBONE_HELP)
@click.option("--weights", help='"imagenet", "random" or a path to a .weights.h5/.h5 file.')
@click.option("--image-size", type=click.IntRange(min=8), help="Input size (default: the backbone's).")
@click.option("--batch-size", type=click.IntRange(min=1), help=BATCH_SIZE_HELP)
@click.option("--seed", type=int, default=1337, show_default=True, help="Seed of the split and every fit.")
@click.option("--out", default="runs", show_default=True, help="Parent folder of the comparison folder.")
@click.option("--name", help="Folder name (default compare-<data>-<timestamp>).")
@click.option("--quiet", "-q", is_flag=True, help="Only the final table.")
def compare(data, recipes, epochs, backbone, weights, image_size, batch_size, seed, out, name, quiet):
    """Train several recipes on the same split and seed; show them side by side with the selector's pick.

    \b
    Example:
      transferkit compare --data ./pets --epochs 3      # all four recipes, and the selector's regret
    """
    from transferkit.selection.compare import compare as run_compare

    verbose = _verbosity(quiet)
    names = tuple(entry.strip() for entry in recipes.split(",") if entry.strip())
    result = run_compare(
        data,
        recipes=names,
        epochs=epochs,
        backbone=backbone,
        weights=weights,
        image_size=image_size,
        batch_size=batch_size,
        seed=seed,
        out=out,
        name=name,
        verbose=verbose,
    )
    if not verbose:  # otherwise the API printed it
        click.echo(result.table())
    click.echo(f"Wrote {result.run_dir}/comparison.json, comparison.csv, comparison.png")


if __name__ == "__main__":
    main()
