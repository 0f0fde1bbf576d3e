"""What a run leaves behind: metrics, figures (one save helper), the HTML report, the run folder,
the ``compare`` record, and the augmentation preview.

- :mod:`~transferkit.reporting.metrics`: accuracy, top-5, per-class precision/recall/F1, confusion.
- :mod:`~transferkit.reporting.figures`: every PNG, saved through one helper.
- :mod:`~transferkit.reporting.diagnostics`: held-out predictions, confused pairs, top losses, ECE.
- :mod:`~transferkit.reporting.grad_cam`: class-activation heat maps on the base's last feature map.
- :mod:`~transferkit.reporting.interpretation`: ``interpretation.json`` and its figures in the run folder.
- :mod:`~transferkit.reporting.next_steps`: what to do next, derived from the results.
- :mod:`~transferkit.reporting.html`: ``report.html``, self-contained; ``html_parts``: its blocks.
- :mod:`~transferkit.reporting.runfolder`: the run folder's files, written atomically and read back.
- :mod:`~transferkit.reporting.comparison`: the record of a ``compare`` run.
- :mod:`~transferkit.reporting.preview`: ``transferkit augment-preview``.
"""
