"""Trainer side of APEX: Flow-GRPO on SD3.5 with adaptive multi-objective balancing.

The pure math lives in :mod:`trainer.core`; Ray, Serve and Train shells are built on top of it.
"""
