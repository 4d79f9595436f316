"""The goals of issue "GPU throughput", evaluated on one run's document (pure, no torch).

Each goal is a threshold on one figure. A figure can come from several variants of the same
code (``eager``; the fast paths ``fast`` and ``fast_merged``): the goal takes the best one
measured and names it, because a goal asks what the project can do with its own switches.
A goal whose figure is missing (its section skipped, failed, or measured at another size)
is ``not measured``, never passed or failed on a guess.

The table prints them last; the JSON keeps them under ``goals``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PASS, FAIL, NOT_MEASURED = "pass", "fail", "not measured"
STATUSES = (PASS, FAIL, NOT_MEASURED)
VARIANT_SECTIONS = {"eager": None, "fast": "fast", "fast_merged": "fast_merged"}


def _ok(record: Any) -> bool:
    return isinstance(record, dict) and record.get("status") == "ok"


def variant_parts(doc: dict[str, Any], part: str) -> list[tuple[str, dict]]:
    """``[(variant, record)]`` of a measured ``part`` (rollout, transformer, train) per variant.

    The eager path's parts are sections of their own; a fast variant's are inside its section.
    Parts that are missing, skipped or failed are left out.
    """
    sections = doc["sections"]
    out = []
    for variant, name in VARIANT_SECTIONS.items():
        if name is None:
            record = sections.get(part)
        else:
            section = sections.get(name)
            record = section.get(part) if _ok(section) else None
        if _ok(record):
            out.append((variant, record))
    return out


def _group(record: dict, n: int) -> float | None:
    return record.get("groups", {}).get(str(n), {}).get("images_per_s")


def compare_with_diffusers(doc: dict[str, Any]) -> dict[str, Any]:
    """The project's images/s against diffusers' ``__call__`` at the same group size.

    Eager: one sampler call of the group; fast variants: the trainer's micro-batches (see
    :mod:`bench.gpucheck.fast`). ``{"status": ...}`` with a reason when diffusers was not
    measured.
    """
    ref = doc["sections"].get("diffusers", {})
    if not _ok(ref) or "images_per_s" not in ref:
        return {"status": "skipped", "reason": "diffusers not measured"}
    n, rate = ref["images"], ref["images_per_s"]
    project = {}
    for variant, record in variant_parts(doc, "rollout"):
        mine = _group(record, n)
        if mine:
            mb = record.get("micro_batch")
            how = f"micro-batches of {mb}" if mb else "one call"
            project[variant] = {"images_per_s": mine, "ratio": mine / rate, "sampled_as": how}
    return {"status": "ok", "images": n, "diffusers_images_per_s": rate, "project": project}


@dataclass(frozen=True)
class Goal:
    """One goal: ``value op threshold`` on the figure ``extract`` finds (best of variants)."""

    key: str
    description: str
    threshold: float
    op: str  # ">=" or "<="
    unit: str
    extract: Callable[[dict], tuple[list[tuple[str, float]], str]]  # candidates, why none

    def evaluate(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The goal's record: value, the variant it came from, status and a note."""
        candidates, why = self.extract(doc)
        record: dict[str, Any] = {
            "goal": self.key,
            "description": self.description,
            "threshold": self.threshold,
            "op": self.op,
            "unit": self.unit,
            "value": None,
            "variant": None,
        }
        values = [(v, x) for v, x in candidates if x is not None]
        if not values:
            return {**record, "status": NOT_MEASURED, "note": why or "no figure"}
        pick = max if self.op == ">=" else min
        variant, value = pick(values, key=lambda c: c[1])
        passed = {">=": operator.ge, "<=": operator.le}[self.op](value, self.threshold)
        note = ", ".join(f"{v} {x:.4g}" for v, x in values)
        return {
            **record,
            "value": value,
            "variant": variant,
            "status": PASS if passed else FAIL,
            "note": f"best of: {note}",
        }


def _transformer_share(key: str) -> Callable[[dict], tuple[list, str]]:
    def extract(doc):
        parts = variant_parts(doc, "transformer")
        return [(v, r.get(f"{key}_of_peak")) for v, r in parts if f"{key}_s" in r], (
            "no transformer figure (or no measured peak)"
        )

    return extract


def _rollout_ratio(doc):
    cmp = compare_with_diffusers(doc)
    if cmp["status"] != "ok":
        return [], cmp["reason"]
    return [(v, r["ratio"]) for v, r in cmp["project"].items()], "no project rollout at that size"


def _train(key: str) -> Callable[[dict], tuple[list, str]]:
    def extract(doc):
        st = doc["settings"]
        want = (st["train_micro_batch"], st["train_timesteps"])
        out = []
        for variant, r in variant_parts(doc, "train"):
            if (r.get("micro_batch"), r.get("timesteps")) == want:
                out.append((variant, r.get(key)))
        return out, f"no policy_update of {want[0]} samples x {want[1]} steps"

    return extract


def _pickscore(doc) -> dict[str, Any]:
    rewards = doc["sections"].get("rewards", {})
    return rewards.get("rewards", {}).get("pickscore", {}) if _ok(rewards) else {}


def _pickscore_batch64(doc):
    rec = _pickscore(doc).get("in_process", {})
    rate = rec.get("batches", {}).get("64", {}).get("images_per_s")
    if rec.get("preprocess", "device") != "device":
        return [], "PickScore was not measured with preprocess: device"
    return ([("device", rate)] if rate else []), "no PickScore in-process figure at batch 64"


def _serve_ratio(doc):
    rec = _pickscore(doc)
    mine = rec.get("in_process", {}).get("batches", {}).get("16", {}).get("images_per_s")
    served = rec.get("serve", {}).get("batches", {}).get("16", {}).get("images_per_s")
    if not (mine and served):
        return [], "no PickScore in-process and Serve figures at batch 16"
    return [("serve", served / mine)], ""


def _epoch(doc):
    est = doc.get("estimate", {})
    if est.get("status") != "ok":
        return [], f"estimate {est.get('status', 'missing')}: {est.get('reason', '')}"
    return [(est.get("variant", "eager"), est["epoch_s"])], ""


GOALS = (
    Goal(
        "transformer_forward",
        "transformer forward (LoRA) >= 55% of the measured peak",
        0.55,
        ">=",
        "of peak",
        _transformer_share("forward"),
    ),
    Goal(
        "transformer_forward_backward",
        "transformer forward + LoRA backward >= 45% of the measured peak",
        0.45,
        ">=",
        "of peak",
        _transformer_share("forward_backward"),
    ),
    Goal(
        "rollout_vs_diffusers",
        "rollout >= 1.6x diffusers' StableDiffusion3Pipeline.__call__",
        1.6,
        ">=",
        "x diffusers",
        _rollout_ratio,
    ),
    Goal(
        "policy_update_seconds",
        "policy_update, 8 samples x 9 steps <= 2.5 s",
        2.5,
        "<=",
        "s",
        _train("seconds_per_micro_batch"),
    ),
    Goal(
        "policy_update_memory",
        "policy_update peak memory <= 40 GB",
        40.0,
        "<=",
        "GB",
        _train("peak_memory_gb"),
    ),
    Goal(
        "pickscore_in_process",
        "PickScore in-process, batch 64, 512 px, preprocess device >= 1000 img/s",
        1000.0,
        ">=",
        "img/s",
        _pickscore_batch64,
    ),
    Goal(
        "serve_over_in_process",
        "PickScore through Serve / in-process at batch 16 >= 0.9",
        0.9,
        ">=",
        "ratio",
        _serve_ratio,
    ),
    Goal(
        "epoch_estimate",
        "paper-setting epoch estimate on 8 GPUs <= 70 s",
        70.0,
        "<=",
        "s",
        _epoch,
    ),
)


def evaluate_goals(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal's record, in the order of :data:`GOALS`."""
    return [goal.evaluate(doc) for goal in GOALS]
