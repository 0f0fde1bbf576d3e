"""Which recipe suits a dataset: the quadrant table, transferability scores, the decision rules,
the one measuring path shared by ``fit``, ``analyze`` and ``compare``, and ``compare`` itself.

- :mod:`~transferkit.selection.quadrants`: size x similarity -> recipe (defined once).
- :mod:`~transferkit.selection.transferability`: LogME, linear probe, per-cut features.
- :mod:`~transferkit.selection.rules`: the decision, its constants, evidence and confidence.
- :mod:`~transferkit.selection.measure`: the forward pass that feeds the rules (used by ``fit``).
- :mod:`~transferkit.selection.analyze`: the selector on its own, evidence written to a folder.
- :mod:`~transferkit.selection.compare`: every recipe trained side by side; the pick's regret.
"""
