"""Plain messages for people, printed in order with the progress bars (no TensorFlow imported here).

Modules that the CLI imports before it knows whether it will train (``transferkit --help`` must
not load TensorFlow) print through :func:`say`; the bars live in :mod:`transferkit.training.progress`.
"""

from __future__ import annotations

import numbers
import shlex
from pathlib import Path


def say(verbose: int, message: str) -> None:
    """Print ``message`` (flushed, so it interleaves with the bars) unless ``verbose`` is 0.

    Args:
        verbose: 0 prints nothing; any other level prints.
        message: one line (or several) for the person watching.
    """
    if verbose:
        print(message, flush=True)


def resume_command(run_dir: str | Path | None) -> str:
    """The shell command that continues ``run_dir`` (quoted: a folder may hold spaces).

    Example:
        >>> resume_command("runs/my pets-auto-20261203-101500")
        "transferkit fit --resume 'runs/my pets-auto-20261203-101500'"
    """
    return f"transferkit fit --resume {shlex.quote(str(run_dir)) if run_dir else 'RUN_DIR'}"


def plural(count: float, noun: str) -> str:
    """``count`` and ``noun``, with an ``s`` unless the count is one; whole counts with thousands
    separators (``:g`` alone wrote a million images as ``1e+06``).

    Example:
        >>> plural(1, "image"), plural(3, "epoch"), plural(1_234_567, "file"), plural(0.5, "epoch")
        ('1 image', '3 epochs', '1,234,567 files', '0.5 epochs')
    """
    number = f"{count:,}" if isinstance(count, numbers.Integral) else f"{count:g}"
    return f"{number} {noun}{'' if count == 1 else 's'}"


def format_p(p_value: float) -> str:
    """``"p = 0.055"``, or ``"p < 0.001"`` below that.

    Example:
        >>> format_p(0.0546), format_p(2e-5)
        ('p = 0.055', 'p < 0.001')
    """
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"
