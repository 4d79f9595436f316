"""Whether a training batch splits evenly over workers, optimizer steps and micro-batches.

A check of :class:`trainer.config.TrainConfig` that needs arithmetic rather than a field
bound; its message suggests values that make the whole batch shape valid.
"""

from __future__ import annotations

__all__ = ["batch_shape_problem"]

_SPLIT_FIELDS = {
    "workers": "scaling.num_workers",
    "steps": "training.optimizer_steps_per_epoch",
    "sample_mb": "sampling.micro_batch_size",
    "train_mb": "training.micro_batch_size",
    "groups": "training.groups_per_epoch",
}


def _split_failure(groups, per_prompt, workers, steps, sample_mb, train_mb):
    """The first batch-shape constraint that fails, as (what, knob, amount), or None."""
    total = groups * per_prompt
    if total % workers:
        return (
            f"training.groups_per_epoch x training.images_per_prompt = {groups} x {per_prompt} "
            f"= {total} images per epoch do not split evenly over scaling.num_workers = {workers}",
            "workers",
            total,
        )
    per = total // workers
    what = f"{per} images per worker per epoch ({total} / {workers} workers) do not divide by"
    if per % steps:
        return f"{what} training.optimizer_steps_per_epoch = {steps}", "steps", per
    if per % sample_mb:
        return f"{what} sampling.micro_batch_size = {sample_mb}", "sample_mb", per
    mb, per_step = train_mb or sample_mb, per // steps
    if per_step % mb:
        src = " (null, so sampling.micro_batch_size)" if train_mb is None else ""
        return (
            f"{per_step} images per worker per optimizer step ({per} / {steps} steps) "
            f"do not divide by training.micro_batch_size = {mb}{src}",
            "train_mb",
            per_step,
        )
    return None


def batch_shape_problem(
    groups: int, per_prompt: int, workers: int, steps: int, sample_mb: int, train_mb: int | None
) -> str | None:
    """Check that every worker gets the same whole number of images, sampler micro-batches,
    optimizer steps and training micro-batches; the message suggests values that make the
    whole batch shape valid (for the failing knob and for ``groups_per_epoch``)."""
    shape = dict(
        groups=groups,
        per_prompt=per_prompt,
        workers=workers,
        steps=steps,
        sample_mb=sample_mb,
        train_mb=train_mb,
    )
    failure = _split_failure(**shape)
    if failure is None:
        return None
    what, knob, amount = failure
    candidates = {
        knob: [d for d in range(1, amount + 1) if amount % d == 0],
        "groups": [*range(groups - 1, 0, -1), *range(groups + 1, 4 * groups + 4096)],
    }
    fixes = []
    for key, values in candidates.items():
        ok = [v for v in values if _split_failure(**{**shape, key: v}) is None]
        if key == "groups":  # the nearest valid value below and above the current one
            ok = sorted([v for v in ok if v < groups][:1] + [v for v in ok if v > groups][:1])
        if ok:
            fixes.append(f"{_SPLIT_FIELDS[key]} to one of {', '.join(map(str, ok[:8]))}")
    return what + "".join(f"{'; set' if i == 0 else '; or set'} {f}" for i, f in enumerate(fixes))
