"""Pretraining of the small text-to-image model that ``make train`` aligns (docs/model.md)."""
