"""THE quadrant table: dataset size x similarity to ImageNet -> the built-in recipe and its strategy.

Every other module reads the quadrants from here; the recipe files in ``recipes/`` carry the
same names (a test checks that each quadrant has its file and that the file's strategy matches).

Example:
    >>> quadrant_for("small", similar=False)
    'small_dissimilar'
    >>> STRATEGIES["small_dissimilar"]
    'truncate'
"""

from __future__ import annotations

from transferkit.errors import choices_error

SIZES = ("small", "large")
SIZE_CHOICES = ("auto", *SIZES)  # what a user may say; "auto" = measured from the dataset card

STRATEGIES = {  # quadrant (= built-in recipe name) -> what its recipe does with the base
    "small_similar": "freeze",
    "small_dissimilar": "truncate",
    "large_similar": "fine_tune",
    "large_dissimilar": "retrain",
}
QUADRANTS = tuple(STRATEGIES)

PROVISIONAL = "small_similar"
"""The recipe ``fit(size="auto")`` and ``analyze`` measure with: same split, same base, same size."""


def quadrant_for(size: str, similar: bool) -> str:
    """The quadrant (and built-in recipe name) for a dataset size and a similarity call."""
    if size not in SIZES:
        raise choices_error("size", size, SIZES)
    return f"{size}_{'similar' if similar else 'dissimilar'}"
