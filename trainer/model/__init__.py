"""The SD3 policy: loading, LoRA, and the Flow-GRPO SDE sampler with per-step log-probs.

- :mod:`trainer.model.tiny`: a tiny random-weight SD3 built in code (CPU tests, local runs).
- :mod:`trainer.model.pipeline`: ``load_pipeline`` (tiny, Hugging Face id or local path), freezing,
  precision, and the LoRA helpers (add, save/load state, disable for the KL reference).
- :mod:`trainer.model.prompts`: :class:`~trainer.model.prompts.PromptEmbeds` and their encoding.
- :mod:`trainer.model.rollout`: prompt encoding, the SDE sampler that records a trajectory
  (:class:`~trainer.model.rollout.Rollout`) and the training-time recompute of one step's log-prob.
- :mod:`trainer.model.fast`: the ``performance`` fast paths (compiled blocks, attention kernel,
  VAE dtype, and the sampling-only rewrites of :mod:`trainer.model.merged`: LoRA merged, q/k/v
  fused).

See docs/model.md.
"""
