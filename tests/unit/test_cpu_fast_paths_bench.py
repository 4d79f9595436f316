"""bench/cpu_fast_paths.py runs on the random-weight config and reports sane distances."""

from __future__ import annotations

import json
from pathlib import Path

from bench import cpu_fast_paths

ROOT = Path(__file__).resolve().parents[2]


def test_bench_writes_every_variant_and_exact_paths_match_eager(tmp_path):
    out = tmp_path / "fast.json"
    code = cpu_fast_paths.main(
        [
            "--config",
            str(ROOT / "deploy" / "configs" / "local-random.yaml"),
            "--batch",
            "2",
            "--reps",
            "2",  # eager's second round follows vae_bf16's: the VAE must be back in float32
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = json.loads(out.read_text())["variants"]
    assert set(rows) == set(cpu_fast_paths.VARIANTS)
    assert rows["eager"]["max_dlogp"] == 0.0 and rows["eager"]["max_dpixel"] == 0
    assert rows["eager"]["speedup"] == 1.0
    # the exact fast paths: the same rollouts up to float rounding
    for name in ("merge", "merge+fused", "sync_free"):
        assert rows[name]["max_dlogp"] < 1e-4, name
        assert rows[name]["max_dpixel"] <= 1, name
    assert all(r["median_s"] > 0 for r in rows.values())
