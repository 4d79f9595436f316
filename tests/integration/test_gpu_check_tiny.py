"""``bench/gpu_check.py --tiny`` runs every section on the shared Ray cluster and stays honest.

The GPU check is only run for real on a GPU machine; this keeps its code from rotting: the
same sections, the trainer's functions, the reward classes and a Serve app of its own, at
tiny size on the CPU.
"""

from __future__ import annotations

import json
import math

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _numbers(node, path=""):
    """Every numeric leaf of a JSON document, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _numbers(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _numbers(value, f"{path}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


def test_tiny_gpu_check_measures_every_section(ray_cluster, reward_app, tmp_path, capsys):
    # reward_app first: it starts Serve's proxies on the ports the other tests use
    from ray import serve

    from bench.gpu_check import SECTIONS, main
    from bench.gpucheck.goals import GOALS, STATUSES
    from bench.gpucheck.rewards import APP_NAME, REWARDS

    out = tmp_path / "gpu_check.json"
    assert main(["--tiny", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["total_s"] < doc["settings"]["budget_s"] + 30  # the budget holds

    sections = doc["sections"]
    assert set(sections) == set(SECTIONS)
    for name, section in sections.items():
        if section["status"] == "skipped":
            assert section["reason"], name
            continue
        assert section["status"] == "ok", (name, section)
        numbers = list(_numbers(section))
        assert numbers, name
        bad = [(p, v) for p, v in numbers if not math.isfinite(v)]
        assert not bad, (name, bad)

    # the figures the estimate and the table are built from
    assert sections["peak_matmul"]["tflops"] > 0
    groups = sections["rollout"]["groups"]
    assert [int(n) for n in groups] == doc["settings"]["group_sizes"]
    assert all(g["images_per_s"] > 0 and g["achieved_tflops"] > 0 for g in groups.values())
    tr = sections["transformer"]
    assert 0 < tr["flops_forward"] < tr["flops_forward_backward"]
    train = sections["train"]
    assert train["timesteps"] == doc["settings"]["train_timesteps"] == 3
    assert train["seconds_per_micro_batch"] > 0 and math.isfinite(train["loss"])
    for reward in REWARDS:
        for path in ("in_process", "serve"):
            batches = sections["rewards"]["rewards"][reward][path]["batches"]
            assert list(batches) == ["16", "32", "64"], (reward, path)
            assert all(b["images_per_s"] > 0 and b["unscored"] == 0 for b in batches.values())

    pil = sections["rewards"]["rewards"]["pickscore"]["in_process_pil"]
    assert pil["preprocess"] == "pil" and list(pil["batches"]) == ["64"]
    assert pil["batches"]["64"]["images_per_s"] > 0
    assert sections["rewards"]["rewards"]["pickscore"]["in_process"]["preprocess"] == "device"
    _check_fast_paths(doc)

    est = doc["estimate"]
    assert est["status"] == "ok" and "tiny" in est["label"]
    assert est["rollout_variant"] in ("eager", "fast") and est["eager_epoch_s"] > 0
    assert est["images_per_gpu"] == 48 * 24 / 8
    parts = est["sampling_s"] + sum(est["scoring_s"].values()) + est["training_s"]
    assert est["epoch_s"] == pytest.approx(parts)
    used = train if est["train_variant"] == "eager" else sections["fast"]["train"]
    assert est["train_seconds_per_micro_batch"] == used["seconds_per_micro_batch"]
    assert est["optimizer_step_s"] == pytest.approx(
        144 / 2 / used["micro_batch"] * used["seconds_per_micro_batch"]
    )

    # the table is printed last, and names every section
    lines = capsys.readouterr().out.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("section"))
    table = lines[header:]
    labels = ("peak", "rollout", "diffusers", "tflops", "train", "fast ", "fast_merged")
    for label in (*labels, "rewards", "estimate", "goal"):
        assert any(line.startswith(label) for line in table), label
    goal_rows = table[-len(GOALS) :]  # the goals come last, one row each, with their verdict
    assert all(line.startswith("goal") for line in goal_rows)
    for line, goal in zip(goal_rows, doc["goals"], strict=True):
        assert goal["status"].upper() in line

    goals = doc["goals"]
    assert [g["goal"] for g in goals] == [g.key for g in GOALS]
    for goal in goals:  # every goal's figure exists on --tiny, so each gets a verdict
        assert goal["status"] in STATUSES and goal["status"] != "not measured", goal
        assert goal["value"] > 0 and goal["variant"], goal

    # the shared cluster survives; only the check's own app is gone
    assert ray_cluster.is_initialized()
    assert APP_NAME not in serve.status().applications


def _check_fast_paths(doc):
    """The diffusers reference and both fast-path variants ran, with sane figures."""
    st, sections = doc["settings"], doc["sections"]
    ref = sections["diffusers"]
    assert ref["status"] == "ok" and ref["images"] == st["compare_group"]
    assert ref["images_per_s"] > 0
    cmp = doc["comparison"]
    assert cmp["status"] == "ok" and set(cmp["project"]) == {"eager", "fast", "fast_merged"}
    assert all(r["ratio"] > 0 for r in cmp["project"].values())

    for name in ("fast", "fast_merged"):
        section = sections[name]
        assert section["status"] == "ok", (name, section)
        perf = section["performance"]
        assert perf["compile_blocks"] and perf["sync_free_sampler"]
        assert perf["vae_dtype"] == "bfloat16" and perf["compile_backend"] == st["compile_backend"]
        assert perf["merge_lora_for_rollouts"] == perf["fused_qkv"] == (name == "fast_merged")
        assert perf["attention_backend"] == section["attention_probe"]["chosen"]
        assert section["compile_s"]["total"] >= 0 and "rollout" in section["compile_s"]
        roll = section["rollout"]
        assert roll["status"] == "ok" and roll["micro_batch"] == st["sampling_micro_batch"]
        assert [int(n) for n in roll["groups"]] == st["fast_groups"]
        assert all(g["images_per_s"] > 0 for g in roll["groups"].values()), roll
        tr = section["transformer"]
        assert tr["status"] == "ok" and tr["forward_tflops"] > 0 and not tr["flops_counted"]
    fast = sections["fast"]
    assert fast["transformer"]["forward_backward_tflops"] > 0
    train = fast["train"]
    assert train["status"] == "ok" and train["seconds_per_micro_batch"] > 0
    assert train["timesteps"] == st["train_timesteps"] and train["achieved_tflops"] > 0
    assert "forward_backward_tflops" not in sections["fast_merged"]["transformer"]
