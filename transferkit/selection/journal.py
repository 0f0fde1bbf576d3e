"""The selection's progress in the run folder: a fit killed while it selects resumes where it was.

``fit`` writes its run folder before it measures anything. The selector's decision goes to
``selection.json`` as soon as it is made, and each trial's result (validation accuracy, epochs,
which validation images it got right) to ``trials-progress.json`` as soon as it is trained, keyed
by the trial's whole recipe. ``fit --resume`` on that folder reads the decision back instead of
measuring again and replays the finished trials instead of training them again: a trial is a
seeded run of its recipe on the same split, so its recorded result is the one it would give.
Once the trials are settled and the fit's own training starts, the progress file goes.

Example:
    >>> import tempfile
    >>> from transferkit.recipes import load_builtin
    >>> journal = SelectionJournal(tempfile.mkdtemp())
    >>> recipe = load_builtin("small_similar")
    >>> journal.trial(recipe) is None
    True
    >>> journal.record_trial(recipe, (0.75, 3, np.array([True, False, True, True])))
    >>> journal.trial(recipe)
    (0.75, 3, array([ True, False,  True,  True]))
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from transferkit import recipes as recipe_io
from transferkit.fileio import write_json
from transferkit.recipes import Recipe
from transferkit.selection.decision import Selection

SELECTION_FILE = "selection.json"
TRIALS_FILE = "trials-progress.json"

TrialResult = tuple[float, int, "np.ndarray | None"]  # what selection.trials' ``train`` returns


class SelectionJournal:
    """Reads and writes one run folder's selection in progress (see the module's docstring)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def selection(self) -> Selection | None:
        """The selector's decision recorded before an interruption, or None."""
        path = self.run_dir / SELECTION_FILE
        if not path.exists():
            return None
        return Selection.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def record_selection(self, selection: Selection) -> None:
        write_json(self.run_dir / SELECTION_FILE, selection.to_dict())

    def trial(self, recipe: Recipe) -> TrialResult | None:
        """The result recorded for a trial of exactly ``recipe``, or None."""
        known = self._trials().get(_key(recipe))
        if known is None:
            return None
        hits = None if known["hits"] is None else np.array([c == "1" for c in known["hits"]])
        return float(known["val_accuracy"]), int(known["epochs"]), hits

    def record_trial(self, recipe: Recipe, result: TrialResult) -> None:
        accuracy, epochs, hits = result
        hits = None if hits is None else "".join("1" if hit else "0" for hit in np.asarray(hits))
        entry = {"recipe": recipe.name, "val_accuracy": float(accuracy), "epochs": int(epochs), "hits": hits}
        write_json(self.run_dir / TRIALS_FILE, self._trials() | {_key(recipe): entry})

    def has_trials(self) -> bool:
        return bool(self._trials())

    def settled(self) -> None:
        """The trials are in ``selection.json`` now: their progress file is no longer needed."""
        (self.run_dir / TRIALS_FILE).unlink(missing_ok=True)

    def _trials(self) -> dict:
        path = self.run_dir / TRIALS_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _key(recipe: Recipe) -> str:
    return hashlib.sha256(recipe_io.dumps(recipe).encode()).hexdigest()[:16]
