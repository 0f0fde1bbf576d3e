"""User-facing errors.

Every error a user can fix (bad flag, missing folder, unknown backbone, weights that cannot be
found offline) is a :class:`TransferkitError`. The CLI prints its message as one line on stderr
and exits with status 2 (3 for a missed quality bar: :class:`QualityGateError`); the Python API
lets it propagate like any exception.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator


class TransferkitError(Exception):
    """An error the user can fix; the message says what was received, expected, and how to fix it."""

    exit_code = 2


class QualityGateError(TransferkitError):
    """A quality bar the user set was missed (``--min-accuracy``, an export's ``--max-drop``).

    Raised after everything was written, so the run folder or exported file stays for inspection.
    The CLI exits with status 3, which CI jobs can tell apart from a usage error (2).
    """

    exit_code = 3


class TransferkitWarning(UserWarning):
    """A call that did less than it asked for, said so (``predict(..., tta=True)`` for a run with
    no views to average); the CLI prints the message as one line on stderr."""


def extra_install(extra: str) -> str:
    """The command that installs one of transferkit's optional extras, as a user of a checkout runs it
    (transferkit is installed from its folder, ``pip install -e .``; it is not on PyPI).

    Example:
        >>> extra_install("export")
        'pip install -e ".[export]" (in the transferkit folder)'
    """
    return f'pip install -e ".[{extra}]" (in the transferkit folder)'


def choices_error(kind: str, received: object, valid: list[str] | tuple[str, ...]) -> TransferkitError:
    """Build the standard "Unknown X 'y'. Choose one of: a, b, c." error."""
    return TransferkitError(f"Unknown {kind} {received!r}. Choose one of: {', '.join(sorted(valid))}.")


def saved_state_error(path: object, error: Exception) -> TransferkitError:
    """A run's checkpoint or backup that the model built for its resume cannot take.

    Its layers or shapes differ, e.g. because another version of transferkit started the run.
    """
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return TransferkitError(
        f"{path} does not fit the model built to resume this run (was the run started by another "
        f"version of transferkit?): {detail}. Resume it with the version that started it, or start "
        "the run again; nothing in the run folder was changed."
    )


_ON_COMMAND_LINE = contextvars.ContextVar("transferkit_on_command_line", default=False)
_NO_VALUE = object()


@contextlib.contextmanager
def on_command_line() -> Iterator[None]:
    """While a CLI command runs: messages name settings by their flags (:func:`setting`)."""
    token = _ON_COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _ON_COMMAND_LINE.reset(token)


def command_line() -> bool:
    """Whether the call came from the ``transferkit`` command (inside :func:`on_command_line`)."""
    return _ON_COMMAND_LINE.get()


def setting(name: str, value: object = _NO_VALUE, *, placeholder: bool = False) -> str:
    """A setting as the user gives it, for a message to name: the flag on the command line, the
    keyword argument in Python (where a message naming ``--max-drop`` would send a Python user
    looking for a flag that their call does not have). ``placeholder``: ``value`` stands for one
    (``PATH``), written as it is.

    Example:
        >>> setting("image_size", 224), setting("weights", "random"), setting("name")
        ('image_size=224', "weights='random'", 'name=...')
        >>> setting("weights", "PATH", placeholder=True)
        'weights=PATH'
        >>> with on_command_line():
        ...     setting("image_size", 224), setting("weights", "random"), setting("name")
        ('--image-size 224', '--weights random', '--name')
        >>> with on_command_line():  # a flag that takes no value
        ...     setting("tta", True)
        '--tta'
    """
    if _ON_COMMAND_LINE.get():
        flag = "--" + name.replace("_", "-")
        return flag if value is _NO_VALUE or value is True else f"{flag} {value}"
    if value is _NO_VALUE:
        return f"{name}=..."
    return f"{name}={value}" if placeholder else f"{name}={value!r}"
