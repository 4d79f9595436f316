"""Reward models, one file each, registered by name (see :mod:`services.rewards.base`).

The registry imports every module and package here whose name does not start with ``_``: each
is a reward (``ocr/`` is one, a package holding its private engines). ``_torch/`` and
``_clip.py`` are shared plumbing. A reward defined elsewhere (the benchmarks'
``bench/simulated_latency.py``) registers when its module is imported, which a deployment
asks for with ``module:`` in its config.
"""
