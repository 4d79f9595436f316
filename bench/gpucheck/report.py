"""The epoch estimate derived from the per-GPU figures, and the one table printed last.

Estimate of one Flow-GRPO epoch at the paper setting (G groups x n images, W GPUs), from
what one GPU measured. With ``I = G n / W`` images per GPU::

    epoch = I / r_roll + sum_k I / r_k + (I / b) * t_b

- ``r_roll``: rollout images/s at the sampler micro-batch the trainer uses (8; the measured
  group size nearest to it), prompt encoding and VAE decode included, of the fastest
  variant measured (the fast paths of ``bench/gpucheck/fast.py`` when they ran);
- ``r_k``: images/s of reward k through Serve at the smallest measured batch (the trainer
  sends one micro-batch per call), the reward replicas sharing the GPU (fractional GPU), so
  scoring is added, not overlapped with sampling (an upper bound; the overlapped lower bound
  ``max(sampling, scoring) + training`` is reported too); in-process where a reward was not
  served (the full run serves PickScore and aesthetic only). OCR runs on CPUs, left out;
- ``t_b``: seconds of one ``policy_update`` over a micro-batch of ``b`` samples and all
  trained timesteps (policy forward+backward, reference forward, clip, AdamW), so ``I / b``
  of them is the epoch's update (its 2 optimizer steps cost ``I / b`` AdamW steps here:
  negligible for ~19M LoRA weights), of the fastest variant measured.

Assumed: perfect data parallelism (each GPU does ``I`` images; the LoRA gradient all-reduce,
~75 MB per optimizer step, is not counted), no evaluation or checkpoint in the epoch, models
loaded and Ray up. On ``--tiny`` the formula runs on the tiny figures and says so.
"""

from __future__ import annotations

from typing import Any

from bench.gpucheck.goals import variant_parts

NA = "n/a"
Row = tuple[str, str, str, str]
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


ESTIMATE_VARIANTS = ("eager", "fast")  # fast_merged is opt-in: it moves the recorded log-probs


def _fastest(doc: dict[str, Any], eager_only: bool) -> tuple[Any, Any]:
    """``((variant, (batch, record)), (variant, train record))``: the fastest measured figures.

    Rollout: among the variants measured nearest the sampler's micro-batch, the one with the
    most images/s; training: the one with the fewest seconds per sample. Only the eager path
    and the ``fast`` variant count (``fast_merged`` is opt-in in the trainer); ``eager_only``:
    the eager path's figures.
    """
    allowed = ("eager",) if eager_only else ESTIMATE_VARIANTS
    want = doc["settings"]["paper"]["sampling_micro_batch"]
    rolls = [
        (v, pick)
        for v, r in variant_parts(doc, "rollout")
        if v in allowed and (pick := nearest(r.get("groups", {}), want))
    ]
    if rolls:  # compare like with like: the batch nearest the micro-batch, then the rate
        batches = {str(b): {"images_per_s": 1.0} for _, (b, _) in rolls}
        closest = nearest(batches, want)[0]
        rolls = [c for c in rolls if c[1][0] == closest]
    trains = [(v, r) for v, r in variant_parts(doc, "train") if v in allowed]
    roll = max(rolls, key=lambda c: c[1][1]["images_per_s"], default=None)
    train = min(
        trains, key=lambda c: c[1]["seconds_per_micro_batch"] / c[1]["micro_batch"], default=None
    )
    return roll, train


def epoch_estimate(doc: dict[str, Any]) -> dict[str, Any]:
    """The formula of the module docstring on this run's fastest figures (or why it cannot run).

    The rollout and update figures come from the fastest variant measured (the fast paths when
    they ran); ``eager_epoch_s`` is the same formula on the eager figures alone.
    """
    best = _estimate(doc, *_fastest(doc, eager_only=False))
    if best["status"] == "ok":
        eager = _estimate(doc, *_fastest(doc, eager_only=True))
        best["eager_epoch_s"] = eager.get("epoch_s")
    return best


def _estimate(doc: dict[str, Any], roll_pick, train_pick) -> dict[str, Any]:
    paper, sections = doc["settings"]["paper"], doc["sections"]
    images = paper["groups"] * paper["group_size"] / paper["workers"]
    missing = []
    if roll_pick is None:
        missing.append("rollout")
    if train_pick is None:
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
    (roll_variant, roll), (train_variant, train) = roll_pick, train_pick
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
        "variant": (
            "eager"
            if roll_variant == train_variant == "eager"
            else f"rollout {roll_variant}, update {train_variant}"
        ),
        "rollout_variant": roll_variant,
        "train_variant": train_variant,
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


def _rollout_rows(roll: dict, st: dict, tag: str = "rollout") -> list[Row]:
    rows = []
    how = f" ({roll['micro_batch']}/call)" if roll.get("micro_batch") else ""
    for n, rec in roll.get("groups", {}).items():
        if "images_per_s" not in rec:
            rows.append((tag, f"SDE sampler, group {n}{how}", NA, _reason(rec)))
            continue
        note = (
            f"{st['num_steps']} steps, CFG {st['guidance_scale']}, {st['resolution']} px; "
            f"{_fmt(rec.get('achieved_tflops'))} TFLOP/s = {_pct(rec.get('achieved_of_peak'))} "
            f"of peak; peak mem {_fmt(rec['peak_memory_gb'])} GB"
        )
        value = f"{_fmt(rec['images_per_s'])} img/s"
        rows.append((tag, f"SDE sampler, group {n}{how}", value, note))
    return rows or [(tag, "SDE sampler", NA, _reason(roll))]


def _transformer_rows(tr: dict, tag: str = "tflops") -> list[Row]:
    rows = []
    for key, label in (("forward", "forward"), ("forward_backward", "fwd+bwd, LoRA grads")):
        if not _ok(tr):
            rows.append((tag, f"transformer {label}", NA, _reason(tr)))
            continue
        if f"{key}_tflops" not in tr:
            continue  # a merged adapter has no backward
        note = (
            f"{_pct(tr.get(f'{key}_of_peak'))} of peak; {_flops(tr['flops_' + key])} "
            f"per call of {tr['rows']} rows"
        )
        rows.append((tag, f"transformer {label}", f"{_fmt(tr[f'{key}_tflops'])} TFLOP/s", note))
    return rows


def _train_rows(train: dict, tag: str = "train") -> list[Row]:
    if not _ok(train):
        return [(tag, "policy_update", NA, _reason(train))]
    label = f"policy_update, {train['micro_batch']} samples x {train['timesteps']} steps"
    note = (
        f"{_fmt(train.get('achieved_tflops'))} TFLOP/s = {_pct(train.get('achieved_of_peak'))} "
        f"of peak; peak mem {_fmt(train['peak_memory_gb'])} GB ({train['peak_memory_kind']})"
    )
    return [(tag, label, f"{_fmt(train['seconds_per_micro_batch'])} s", note)]


def _diffusers_rows(doc: dict) -> list[Row]:
    ref, cmp = doc["sections"]["diffusers"], doc.get("comparison", {})
    if cmp.get("status") != "ok":
        return [("diffusers", "StableDiffusion3Pipeline.__call__", NA, _reason(ref))]
    label = f"StableDiffusion3Pipeline.__call__, {cmp['images']} images"
    mine = "; ".join(
        f"{v} {_fmt(r['images_per_s'])} img/s = {r['ratio']:.2f}x ({r['sampled_as']})"
        for v, r in cmp["project"].items()
    )
    value = f"{_fmt(cmp['diffusers_images_per_s'])} img/s"
    return [("diffusers", label, value, f"project: {mine or NA}")]


def _variant_rows(name: str, section: dict, st: dict) -> list[Row]:
    if not _ok(section):
        return [(name, "fast paths", NA, _reason(section))]
    perf = section["performance"]
    switches = [k for k in ("merge_lora_for_rollouts", "fused_qkv", "sync_free_sampler") if perf[k]]
    compiled = section["compile_s"]
    note = (
        f"compile_blocks ({perf['compile_backend']}), attention {perf['attention_backend']}, "
        f"vae {perf['vae_dtype']}, {', '.join(switches)}; compile "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in compiled.items() if k != "total")
    )
    rows = [(name, "compile (first calls - steady)", f"{_fmt(compiled['total'])} s", note)]
    rows += _rollout_rows(section.get("rollout", {}), st, name)
    if "transformer" in section:
        rows += _transformer_rows(section["transformer"], name)
    if "train" in section:
        rows += _train_rows(section["train"], name)
    return rows


def _reward_rows(rw: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, rec in rw.get("rewards", {}).items():
        for path in ("in_process", "in_process_pil", "serve"):
            if path not in rec:
                continue
            sub = rec[path]
            batches = sub.get("batches")
            if batches:
                value = " / ".join(_fmt(v.get("images_per_s")) for v in batches.values())
                note = "img/s at batch " + "/".join(batches)
                if "preprocess" in sub:
                    note += f"; preprocess {sub['preprocess']}"
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
    rows += _diffusers_rows(doc)
    rows += _transformer_rows(s["transformer"])
    rows += _train_rows(s["train"])
    for name in ("fast", "fast_merged"):
        rows += _variant_rows(name, s[name], st)
    rows += _reward_rows(s["rewards"])
    rows += _estimate_rows(doc["estimate"], st)
    rows += _goal_rows(doc.get("goals", []), st)
    return rows


def _goal_rows(goals: list[dict], st: dict) -> list[Row]:
    tag = f"[{LABELS[st['mode']]}] " if st["mode"] in LABELS else ""
    rows = []
    for g in goals:
        value = NA if g["value"] is None else f"{_fmt(float(g['value']))} {g['unit']}"
        where = f" ({g['variant']})" if g["variant"] else ""
        note = f"{tag}{g['status'].upper()}{where}; {g['note']}"
        rows.append(("goal", g["description"], value, note))
    return rows


def format_table(doc: dict[str, Any]) -> str:
    """The summary table: one line per figure, fixed-width columns."""
    rows = [("section", "metric", "value", "note"), *table_rows(doc)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in rows]
    lines.insert(1, "-" * (sum(widths) + 6 + len("note")))
    return "\n".join(lines)
