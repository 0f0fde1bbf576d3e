"""Plain messages for people, printed in order with the progress bars (no TensorFlow imported here).

Modules that the CLI imports before it knows whether it will train (``transferkit --help`` must
not load TensorFlow) print through :func:`say`; the bars live in :mod:`transferkit.training.progress`.
"""

from __future__ import annotations

import numbers
import shlex
from pathlib import Path

from transferkit.errors import command_line


def say(verbose: int, message: str) -> None:
    """Print ``message`` (flushed, so it interleaves with the bars) unless ``verbose`` is 0.

    Args:
        verbose: 0 prints nothing; any other level prints.
        message: one line (or several) for the person watching.
    """
    if verbose:
        print(message, flush=True)


def run_time(seconds: float, resumed: bool = False, before: float = 0.0) -> str:
    """A run's time for its summary and report: ``"52 s"``; for a resumed run ``"52 s (30 before the
    stop, 22 since the resume)"``, or ``"22 s since the resume"`` where the time before the stop is
    not known (``before`` 0.0: the stop came before any progress was saved, or an older run)."""
    if not resumed:
        return f"{seconds:,.0f} s"
    if not before:
        return f"{seconds:,.0f} s since the resume"
    return f"{seconds:,.0f} s ({before:,.0f} before the stop, {seconds - before:,.0f} since the resume)"


def resume_command(run_dir: str | Path | None, *, shell: bool | None = None, **settings: str) -> str:
    """What continues ``run_dir``, as the user works: the shell command on the command line
    (quoted: a folder may hold spaces), the call in Python; ``shell=True``: the command whoever
    asks (the CLI's own handlers, after its command returned). ``settings``: more options, e.g.
    ``data="NEW_FOLDER"``.

    Example:
        >>> resume_command("runs/my pets-auto-20261203-101500")
        "transferkit.resume('runs/my pets-auto-20261203-101500')"
        >>> from transferkit.errors import on_command_line
        >>> with on_command_line():
        ...     resume_command("runs/my pets-auto-20261203-101500", data="NEW_FOLDER")
        "transferkit fit --resume 'runs/my pets-auto-20261203-101500' --data NEW_FOLDER"
    """
    folder = str(run_dir) if run_dir else "RUN_DIR"
    if command_line() if shell is None else shell:
        flags = "".join(f" --{name.replace('_', '-')} {value}" for name, value in settings.items())
        return f"transferkit fit --resume {shlex.quote(folder) if run_dir else folder}{flags}"
    arguments = "".join(f", {name}={value!r}" for name, value in settings.items())
    return f"transferkit.resume({folder!r}{arguments})"


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
