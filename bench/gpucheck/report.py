"""The epoch estimate derived from the per-GPU figures, and the one table printed last.

Estimate of one Flow-GRPO epoch at the paper setting (G groups x n images, W GPUs), from
what one GPU measured. With ``I = G n / W`` images per GPU::

    epoch = I / r_roll + sum_k I / r_k + (I / b) * t_b

- ``r_roll``: rollout images/s at the sampler micro-batch the trainer uses (8; the measured
  group size nearest to it), prompt encoding and VAE decode included;
- ``r_k``: images/s of reward k through Serve at the smallest measured batch (the trainer
  sends one micro-batch per call), the reward replicas sharing the GPU (fractional GPU), so
  scoring is added, not overlapped with sampling (an upper bound; the overlapped lower bound
  ``max(sampling, scoring) + training`` is reported too). OCR runs on CPUs and is left out;
- ``t_b``: seconds of one ``policy_update`` over a micro-batch of ``b`` samples and all
  trained timesteps (policy forward+backward, reference forward, clip, AdamW), so ``I / b``
  of them is the epoch's update (its 2 optimizer steps cost ``I / b`` AdamW steps here:
  negligible for ~19M LoRA weights).

Assumed: perfect data parallelism (each GPU does ``I`` images; the LoRA gradient all-reduce,
~75 MB per optimizer step, is not counted), no evaluation or checkpoint in the epoch, models
loaded and Ray up. On ``--tiny`` the formula runs on the tiny figures and says so.
"""

from __future__ import annotations

from typing import Any

NA = "n/a"
LABELS = {  # the estimate of a run that did not measure SD3.5 Medium says so
    "tiny": "tiny figures, not SD3.5 Medium",
    "smoke": "smoke figures (one layer per model), not SD3.5 Medium",
}


def _ok(section: dict | None) -> bool:
    return bool(section) and section.get("status") == "ok"


def nearest(measured: dict[str, Any], want: int) -> tuple[int, dict] | None:
    """The measured batch equal to ``want``, else the largest below it, else the smallest.

    ``measured`` maps a batch size (as a string) to its record; skipped entries are ignored.
    """
    sizes = sorted(int(k) for k, v in measured.items() if "images_per_s" in v)
    if not sizes:
        return None
    below = [s for s in sizes if s <= want]
    pick = below[-1] if below else sizes[0]
    return pick, measured[str(pick)]


def epoch_estimate(doc: dict[str, Any]) -> dict[str, Any]:
    """The formula of the module docstring on this run's figures (or why it cannot run)."""
    paper, sections = doc["settings"]["paper"], doc["sections"]
    images = paper["groups"] * paper["group_size"] / paper["workers"]
    missing = []
    roll = nearest(sections["rollout"].get("groups", {}), paper["sampling_micro_batch"])
    if not _ok(sections["rollout"]) or roll is None:
        missing.append("rollout")
    train = sections["train"]
    if not _ok(train):
        missing.append("train")
    rates: dict[str, tuple[int, float, str]] = {}
    rewards = sections["rewards"].get("rewards", {}) if _ok(sections["rewards"]) else {}
    for name, rec in rewards.items():
        for path in ("serve", "in_process"):
            pick = nearest(rec.get(path, {}).get("batches", {}), paper["sampling_micro_batch"])
            if pick:
                rates[name] = (pick[0], pick[1]["images_per_s"], path)
                break
    if not rates:
        missing.append("rewards")
    if missing:
        return {"status": "skipped", "reason": f"no {', '.join(missing)} figures"}
    b_roll, r_roll = roll[0], roll[1]["images_per_s"]
    b, t_b = train["micro_batch"], train["seconds_per_micro_batch"]
    t_sample = images / r_roll
    t_score = {name: images / r for name, (_, r, _) in rates.items()}
    t_train = images / b * t_b
    total = t_sample + sum(t_score.values()) + t_train
    score_terms = " + ".join(f"{images:g}/{r:.3g}" for _, r, _ in rates.values())
    return {
        "status": "ok",
        "label": LABELS.get(doc["settings"]["mode"], ""),
        "formula": "epoch = I/r_roll + sum_k I/r_k + (I/b) x t_b, I = G n / W",
        "computed": (
            f"I = {paper['groups']}x{paper['group_size']}/{paper['workers']} = {images:g}; "
            f"{images:g}/{r_roll:.3g} + ({score_terms}) + {images:g}/{b} x {t_b:.3g} "
            f"= {total:.4g} s"
        ),
        "images_per_gpu": images,
        "rollout_batch": b_roll,
        "rollout_images_per_s": r_roll,
        "reward_rates": {
            n: {"batch": bb, "images_per_s": r, "path": p} for n, (bb, r, p) in rates.items()
        },
        "train_micro_batch": b,
        "train_seconds_per_micro_batch": t_b,
        "sampling_s": t_sample,
        "scoring_s": t_score,
        "training_s": t_train,
        "epoch_s": total,
        "epoch_overlapped_s": max(t_sample, sum(t_score.values())) + t_train,
        "optimizer_step_s": images / paper["optimizer_steps"] / b * t_b,
    }


def _fmt(x: Any) -> str:
    """A number for the table: 3 significant digits, no exponent below 1e5."""
    if x is None:
        return NA
    if not isinstance(x, float):
        return str(x)
    if abs(x) >= 1e5:
        return f"{x:.3e}"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _pct(x: float | None) -> str:
    return NA if x is None else f"{x:.0%}"


def _flops(x: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} FLOP"


def _reason(section: dict) -> str:
    return f"{section.get('status', '?')}: {section.get('reason', '')}"


def _rollout_rows(roll: dict, st: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    for n, rec in roll.get("groups", {}).items():
        if "images_per_s" not in rec:
            rows.append(("rollout", f"SDE sampler, group {n}", NA, _reason(rec)))
            continue
        note = (
            f"{st['num_steps']} steps, CFG {st['guidance_scale']}, {st['resolution']} px; "
            f"{_fmt(rec.get('achieved_tflops'))} TFLOP/s = {_pct(rec.get('achieved_of_peak'))} "
            f"of peak; peak mem {_fmt(rec['peak_memory_gb'])} GB"
        )
        rows.append(
            ("rollout", f"SDE sampler, group {n}", f"{_fmt(rec['images_per_s'])} img/s", note)
        )
    return rows or [("rollout", "SDE sampler", NA, _reason(roll))]


def _model_rows(s: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    tr = s["transformer"]
    for key, label in (("forward", "forward"), ("forward_backward", "fwd+bwd, LoRA grads")):
        if not _ok(tr):
            rows.append(("tflops", f"transformer {label}", NA, _reason(tr)))
            continue
        note = (
            f"{_pct(tr.get(f'{key}_of_peak'))} of peak; {_flops(tr['flops_' + key])} "
            f"per call of {tr['rows']} rows"
        )
        rows.append(
            ("tflops", f"transformer {label}", f"{_fmt(tr[f'{key}_tflops'])} TFLOP/s", note)
        )
    train = s["train"]
    if not _ok(train):
        return [*rows, ("train", "policy_update", NA, _reason(train))]
    label = f"policy_update, {train['micro_batch']} samples x {train['timesteps']} steps"
    note = (
        f"{_fmt(train.get('achieved_tflops'))} TFLOP/s = {_pct(train.get('achieved_of_peak'))} "
        f"of peak; peak mem {_fmt(train['peak_memory_gb'])} GB ({train['peak_memory_kind']})"
    )
    return [*rows, ("train", label, f"{_fmt(train['seconds_per_micro_batch'])} s", note)]


def _reward_rows(rw: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, rec in rw.get("rewards", {}).items():
        for path in ("in_process", "serve"):
            sub = rec.get(path, {})
            batches = sub.get("batches")
            if batches:
                value = " / ".join(_fmt(v.get("images_per_s")) for v in batches.values())
                note = "img/s at batch " + "/".join(batches)
                if name == "deqa" and "deqa_standin_flop_ratio" in rw:
                    note += f"; stand-in = {_pct(rw['deqa_standin_flop_ratio'])} of real FLOPs"
            else:
                value, note = NA, _reason(sub)
            rows.append(("rewards", f"{name}, {path.replace('_', '-')}", value, note))
    return rows or [("rewards", "all", NA, _reason(rw))]


def _estimate_rows(est: dict, st: dict) -> list[tuple[str, str, str, str]]:
    if est.get("status") != "ok":
        return [("estimate", "epoch", NA, _reason(est))]
    tag = f"[{est['label']}] " if est["label"] else ""
    paper = st["paper"]
    step_note = f"{tag}{est['images_per_gpu'] / paper['optimizer_steps']:g} samples per GPU"
    return [
        (
            "estimate",
            "optimizer step, paper batch",
            f"{_fmt(est['optimizer_step_s'])} s",
            step_note,
        ),
        (
            "estimate",
            f"epoch, {paper['workers']} GPUs",
            f"{_fmt(est['epoch_s'])} s",
            f"{tag}{est['computed']}",
        ),
        (
            "estimate",
            "epoch, scoring overlapped",
            f"{_fmt(est['epoch_overlapped_s'])} s",
            f"{tag}max(sampling, scoring) + training",
        ),
    ]


def table_rows(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(section, metric, value, note) rows of the summary table."""
    s, st = doc["sections"], doc["settings"]
    env = doc["environment"]
    rows = [("device", "card", env.get("device_name", NA), f"mode {st['mode']}")]
    peak = s["peak_matmul"]
    if _ok(peak):
        label = f"{peak['dtype']} matmul {peak['n']}^3"
        note = f"best 10-call chunk; mean {_fmt(peak['tflops_mean'])}"
        rows.append(("peak", label, f"{_fmt(peak['tflops'])} TFLOP/s", note))
    else:
        rows.append(("peak", "matmul", NA, _reason(peak)))
    build = s["build"]
    note = f"LoRA: {build.get('lora_parameters')} weights" if _ok(build) else _reason(build)
    rows.append(("build", "random-weight SD3 + LoRA", f"{_fmt(build.get('section_s'))} s", note))
    rows += _rollout_rows(s["rollout"], st)
    rows += _model_rows(s)
    rows += _reward_rows(s["rewards"])
    rows += _estimate_rows(doc["estimate"], st)
    return rows


def format_table(doc: dict[str, Any]) -> str:
    """The summary table: one line per figure, fixed-width columns."""
    rows = [("section", "metric", "value", "note"), *table_rows(doc)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in rows]
    lines.insert(1, "-" * (sum(widths) + 6 + len("note")))
    return "\n".join(lines)
