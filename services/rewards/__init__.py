"""Reward models, one file each, registered by name (see :mod:`services.rewards.base`)."""
