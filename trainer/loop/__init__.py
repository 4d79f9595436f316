"""The training loop's pieces around the pure core: prompt sets, workers, evaluation glue.

- :mod:`trainer.loop.data`: prompt files and the per-epoch prompt sampler.
- :mod:`trainer.loop.evaluation_metrics`: effect-size gains, hypervolume and seesaw of
  an evaluation history (method.md section 6).
"""
