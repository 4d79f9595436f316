"""The training loop's pieces around the pure core: prompt sets, workers, evaluation.

- :mod:`trainer.loop.data`: prompt files and the per-epoch prompt sampler.
- :mod:`trainer.loop.worker`: the Ray Train worker loop; what it writes goes through
  :mod:`trainer.outputs`.
- :mod:`trainer.loop.update`: the policy update; :mod:`trainer.loop.gradient_conflict`: the
  per-objective gradient cosines of a measured step.
"""
