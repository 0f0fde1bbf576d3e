"""transferkit: transfer learning for image classification with Keras 3.

Example:
    >>> import transferkit
    >>> run = transferkit.fit(data="./pets", size="small", similar=True)  # doctest: +SKIP
    >>> transferkit.predict(run.run_dir, ["photo.jpg"])  # doctest: +SKIP

Names are imported on first use, so ``import transferkit`` (and ``transferkit --help``) stays
fast and TensorFlow loads only when something needs it.

TensorFlow's C++ log lines (CUDA probing, ``NodeDef mentions attribute`` warnings) are muted:
``import transferkit`` sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless it is set already (it only works
when TensorFlow is not imported yet), and where the level is 3 the lines TensorFlow prints while
it loads are muted too, whoever imports it (a name of this package, one of its modules, or the
app's own ``import keras``). Set ``TF_CPP_MIN_LOG_LEVEL`` yourself, or
``TRANSFERKIT_DEBUG=1`` to see everything (see :mod:`transferkit.runtime.tf_logging`).

On Linux, ``import transferkit`` also sets glibc's malloc to reuse large buffers from its heap
(1.8x faster CPU training where every op mapped and unmapped them) unless a ``MALLOC_*`` variable or
``LD_PRELOAD`` is set, or ``TRANSFERKIT_MALLOC=system`` (see :mod:`transferkit.runtime.allocator`), and on
x86-64 it switches on TensorFlow's oneDNN kernels on CPUs without AVX-512 too (a whole-network train
step 25-30% shorter on AVX2) unless ``TF_ENABLE_ONEDNN_OPTS`` is set (see :mod:`transferkit.runtime.onednn`).
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from transferkit.errors import TransferkitError, TransferkitWarning
from transferkit.runtime.allocator import tune_malloc
from transferkit.runtime.onednn import enable_onednn
from transferkit.runtime.tf_logging import QUIET_CPP_LOG_LEVEL, import_quietly, mute_tensorflow_startup

if os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_CPP_LOG_LEVEL) == QUIET_CPP_LOG_LEVEL:  # read as
    mute_tensorflow_startup()  # TensorFlow loads; the lines it prints before it reads it, muted too
tune_malloc()  # before TensorFlow's threads: large buffers reused from the heap (runtime.allocator)
enable_onednn()  # read when TensorFlow loads: oneDNN's kernels on AVX2 CPUs too (runtime.onednn)

_EXPORTS = {
    "fit": "transferkit.api",
    "resume": "transferkit.api",
    "predict": "transferkit.prediction",
    "evaluate": "transferkit.evaluation",
    "lr_find": "transferkit.api",
    "FitResult": "transferkit.session",
    "PhaseStarted": "transferkit.training.progress",
    "EpochEnded": "transferkit.training.progress",
    "Finished": "transferkit.training.progress",
    "export": "transferkit.exporting.export",
    "analyze": "transferkit.selection.analyze",
    "compare": "transferkit.selection.compare",
    "BACKBONES": "transferkit.backbones.registry",
    "BackboneSpec": "transferkit.backbones.registry",
    "get_backbone": "transferkit.backbones.registry",
    "load_data": "transferkit.data.loading",
    "DataSplits": "transferkit.data.loading",
    "DatasetCard": "transferkit.data.loading",
    "export_dataset": "transferkit.data.examples",
    "list_datasets": "transferkit.data.examples",
    "Recipe": "transferkit.recipes",
    "load_builtin": "transferkit.recipes",
    "load_recipe": "transferkit.recipes",
    "load_run": "transferkit.reporting.runfolder",
    "report": "transferkit.reporting.html",
}

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "DataSplits",
    "DatasetCard",
    "EpochEnded",
    "Finished",
    "FitResult",
    "PhaseStarted",
    "Recipe",
    "TransferkitError",
    "TransferkitWarning",
    "__version__",
    "analyze",
    "compare",
    "evaluate",
    "export",
    "export_dataset",
    "fit",
    "get_backbone",
    "list_datasets",
    "load_builtin",
    "load_data",
    "load_recipe",
    "load_run",
    "lr_find",
    "predict",
    "report",
    "resume",
]

try:
    __version__ = version("transferkit")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"


# Entry points that load TensorFlow when called (some of their modules only import it then, so
# that the CLI's --help stays fast): TensorFlow is loaded, muted, when one is first looked up.
_LOADS_TENSORFLOW = {
    "fit",
    "resume",
    "predict",
    "evaluate",
    "lr_find",
    "export",
    "analyze",
    "compare",
    "load_run",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
    if name in _LOADS_TENSORFLOW:
        import_quietly("tensorflow")
    module = import_quietly(_EXPORTS[name])
    value = getattr(module, "load" if name == "load_recipe" else name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs
    from transferkit.api import fit, lr_find, resume
    from transferkit.backbones.registry import BACKBONES, BackboneSpec, get_backbone
    from transferkit.data.examples import export_dataset, list_datasets
    from transferkit.data.loading import DatasetCard, DataSplits, load_data
    from transferkit.evaluation import evaluate
    from transferkit.exporting.export import export
    from transferkit.prediction import predict
    from transferkit.recipes import Recipe, load_builtin
    from transferkit.recipes import load as load_recipe
    from transferkit.reporting.html import report
    from transferkit.reporting.runfolder import load_run
    from transferkit.selection.analyze import analyze
    from transferkit.selection.compare import compare
    from transferkit.session import FitResult
    from transferkit.training.progress import EpochEnded, Finished, PhaseStarted
