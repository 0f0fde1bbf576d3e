"""User-facing errors.

Every error a user can fix (bad flag, missing folder, unknown backbone, weights that cannot be
found offline) is a :class:`TransferkitError`. The CLI prints its message as one line on stderr
and exits with status 2; the Python API lets it propagate like any exception.
"""

from __future__ import annotations


class TransferkitError(Exception):
    """An error the user can fix; the message says what was received, expected, and how to fix it."""

    exit_code = 2


def choices_error(kind: str, received: object, valid: list[str] | tuple[str, ...]) -> TransferkitError:
    """Build the standard "Unknown X 'y'. Choose one of: a, b, c." error."""
    return TransferkitError(f"Unknown {kind} {received!r}. Choose one of: {', '.join(sorted(valid))}.")
