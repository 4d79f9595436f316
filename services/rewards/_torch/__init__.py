"""Torch plumbing shared by the model-based rewards (PickScore, CLIPScore, aesthetic, DeQA).

One place for what every torch reward would otherwise repeat, one module per role:

- :mod:`.device`: the device and dtype of a config, chunked forward passes, tensors to
  ``float | None`` scores;
- :mod:`.preprocess`: uint8 RGB checks and CLIP-style image preprocessing without torchvision;
- :mod:`.clip`: a loaded CLIP (``ClipParts``), its embeddings, and the tiny random-weight CLIP
  built in code for tests (tokenized offline by :func:`common.tokenizers.clip_tokenizer`);
- :mod:`.pretrained`: Hub ids or local directories: checkpoint files, references, the
  pretrained CLIP and its preprocessing;
- :mod:`.reward`: ``TorchReward``, the base class (chunked no-grad scoring, ``None`` handling,
  what each variant says it scores with).

The leading underscore keeps the reward registry from importing it as a reward.
"""
