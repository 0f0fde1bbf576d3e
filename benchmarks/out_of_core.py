"""Out-of-core data: scan speed and memory, and ``fit``'s memory, at two data sizes each.

1. **Scan**: ``transferkit.data.scan.scan_split`` over folders of N tiny PNGs (copies of one file,
   10 classes); files/s and the process's peak RSS, so the growth per file can be read.
2. **Fit**: ``transferkit.fit(recipe="small_similar")`` (frozen base, cached features: 4
   augmented passes, a clean one for the augmentation check, validation) on synthetic folders of
   N images, with a deliberately small ``--cache-memory`` and, for comparison, with ``auto``
   (everything in memory here). Images/s is the folder's image count over the whole fit's wall
   time (scan, decode, feature passes, head training, evaluation, report).

Each measurement runs in a child process of its own; the child reports its peak RSS
(``ru_maxrss``) and its peak anonymous RSS (sampled from ``/proc/self/status`` every 50 ms: the
memory the kernel cannot reclaim; file-backed pages of a memory-mapped cache are reclaimable),
both also net of the RSS right after importing TensorFlow and transferkit.

Usage:
    python benchmarks/out_of_core.py                       # ~15 minutes on 2 shared cores
    python benchmarks/out_of_core.py --sizes 500 2000 --scan-sizes 5000 20000 --skip-auto
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CLASSES = 10


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakSampler:
    """Samples the process's anonymous RSS in a thread; ``peak_mb`` is the highest seen."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak_kb, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))


def child_scan(data: Path) -> dict:
    from transferkit.data.scan import scan_split

    base_rss, base_anon = _status_kb("VmRSS"), _status_kb("RssAnon")
    with PeakSampler() as sampler:
        started = time.perf_counter()
        scanned = scan_split(data)
        seconds = time.perf_counter() - started
    files = sum(len(images) for images in scanned.images.values())
    return _memory(base_rss, base_anon, sampler) | {"files": files, "seconds": seconds}


def child_fit(data: Path, options: dict) -> dict:
    import transferkit
    import transferkit.api  # noqa: F401  (TensorFlow and Keras load here, before the baseline)

    base_rss, base_anon = _status_kb("VmRSS"), _status_kb("RssAnon")
    with PeakSampler() as sampler, tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        run = transferkit.fit(str(data), recipe="small_similar", out=out, verbose=0, **options)
        seconds = time.perf_counter() - started
        spill_left = (run.run_dir / "cache").exists()
    images = sum(1 for _ in data.rglob("*.png"))
    return _memory(base_rss, base_anon, sampler) | {
        "images": images,
        "seconds": seconds,
        "accuracy": run.metrics.accuracy,
        "spill_folder_left": spill_left,
    }


def _memory(base_rss: int, base_anon: int, sampler: PeakSampler) -> dict:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    return {
        "peak_rss_mb": peak / 1024,
        "peak_anon_mb": sampler.peak_kb / 1024,
        "rss_growth_mb": (peak - base_rss) / 1024,
        "anon_growth_mb": (sampler.peak_kb - base_anon) / 1024,
    }


def make_scan_folder(root: Path, files: int) -> Path:
    from transferkit.testing import make_image_folder

    seed = make_image_folder(root / "seed", classes=1, per_class=1, size=8) / "class_0" / "img_0.png"
    for index in range(files):
        folder = root / "data" / f"class_{index % CLASSES}"
        if index < CLASSES:
            folder.mkdir(parents=True)
        shutil.copyfile(seed, folder / f"{index:06d}.png")
    return root / "data"


def run_child(*args: str) -> dict:
    command = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan-sizes", type=int, nargs=2, default=(10_000, 100_000))
    parser.add_argument("--sizes", type=int, nargs=2, default=(2_000, 8_000), help="Images per fit.")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cache-memory", default="64MB", help="The small budget.")
    parser.add_argument("--skip-auto", action="store_true", help="Skip the all-in-memory comparison.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, data, *options = args.child
        result = child_scan(Path(data)) if kind == "scan" else child_fit(Path(data), json.loads(options[0]))
        print(json.dumps(result))
        return
    results = {"scan": [], "fit": []}
    budgets = [args.cache_memory] + ([] if args.skip_auto else ["auto"])
    with tempfile.TemporaryDirectory(prefix="transferkit-ooc-") as work:
        for files in args.scan_sizes:
            folder = make_scan_folder(Path(work) / f"scan{files}", files)
            result = run_child("scan", str(folder))
            results["scan"].append(result)
            print(_scan_line(result), flush=True)
            shutil.rmtree(folder.parent)
        for images in args.sizes:
            folder = _fit_folder(Path(work), images, args.image_size)
            for budget in budgets:
                options = dict(backbone=args.backbone, weights="random", image_size=args.image_size,
                               epochs=args.epochs, cache_memory=budget)  # fmt: skip
                result = run_child("fit", str(folder), json.dumps(options)) | {"cache_memory": budget}
                results["fit"].append(result)
                print(_fit_line(result), flush=True)
    print(_growth_line("scan", results["scan"], "files"))
    for budget in budgets:
        print(
            _growth_line(
                f"fit, cache_memory={budget}",
                [r for r in results["fit"] if r["cache_memory"] == budget],
                "images",
            )
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _growth_line(what: str, pair: list[dict], unit: str) -> str:
    """How much the peaks grew from the smaller size to the larger, per extra file or image."""
    small, large = pair
    extra = large[unit] - small[unit]
    rss, anon = (large[key] - small[key] for key in ("peak_rss_mb", "peak_anon_mb"))
    return (
        f"growth, {what}: {small[unit]:,} -> {large[unit]:,} {unit}: peak RSS {rss:+.0f} MB "
        f"({rss * 2**20 / extra:+,.0f} B per {unit[:-1]}), peak anonymous {anon:+.0f} MB "
        f"({anon * 2**20 / extra:+,.0f} B per {unit[:-1]})"
    )


def _fit_folder(work: Path, images: int, size: int) -> Path:
    from transferkit.testing import make_image_folder

    return make_image_folder(work / f"fit{images}", classes=CLASSES, per_class=images // CLASSES, size=size)


def _scan_line(r: dict) -> str:
    return (
        f"scan {r['files']:>7,} files: {r['files'] / r['seconds']:>7,.0f} files/s | peak RSS "
        f"{r['peak_rss_mb']:6.0f} MB (+{r['rss_growth_mb']:.0f} MB, "
        f"{r['rss_growth_mb'] * 1024 * 1024 / r['files']:.0f} B/file)"
    )


def _fit_line(r: dict) -> str:
    return (
        f"fit {r['images']:>6,} images, cache_memory={r['cache_memory']:>5}: "
        f"{r['images'] / r['seconds']:6.1f} images/s ({r['seconds']:.0f} s) | "
        f"peak RSS {r['peak_rss_mb']:5.0f} MB (+{r['rss_growth_mb']:.0f}) | "
        f"peak anonymous {r['peak_anon_mb']:5.0f} MB (+{r['anon_growth_mb']:.0f})"
        f" | test acc {r['accuracy']:.3f}{' | SPILL FOLDER LEFT' if r['spill_folder_left'] else ''}"
    )


if __name__ == "__main__":
    main()
