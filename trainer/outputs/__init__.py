"""What a training run leaves behind, and the bar that shows it while it runs.

- :mod:`trainer.outputs.records`: the ``metrics.jsonl`` format (write, read, slice).
- :mod:`trainer.outputs.run_folder`: ``RunFolder``, where every file of a run goes.
- :mod:`trainer.outputs.evaluation_metrics`: effect-size gains, hypervolume and seesaw of an
  evaluation history (method.md section 6).
- :mod:`trainer.outputs.summary`: ``summary.txt``; :mod:`trainer.outputs.plots`: ``plots/*.png``
  (``conflict.png`` from :mod:`trainer.outputs.conflict_plots`); :mod:`trainer.outputs.images`:
  image grids.
- :mod:`trainer.outputs.progress`: the console progress bar (tqdm) of a run.

Every writer takes the records it draws from; this package imports only :mod:`trainer.core`
(pure math), never the loop, the coordinator or Ray, so the loop and the coordinator may use
it without a cycle (``tests/unit/test_layout.py`` checks).
"""
