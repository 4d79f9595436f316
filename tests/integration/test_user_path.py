"""A user's whole path, as real processes: ``make serve &``, ``make train`` against it,
``make sample``, ``services.eval --url``. The services must still be the ones started first.

Each process is started as the Makefile starts it (``python -m ...``), with free ports and a
private discovery folder (``APEX_STATE_DIR``), so it does not meet the session's Ray or another
``make serve`` on the machine. ~3 min on 2 cores: the services' own Ray, the trainer joining
it for one small epoch of the small pretrained model, diffusers sampling 2 prompts twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from bench.common import free_port
from tests.integration.serve_process import wait_for_line
from tests.integration.training_runs import ROOT

pytestmark = pytest.mark.integration
MAX_CONSOLE_LINES = 30


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``make serve`` with its own Ray, on free ports; stopped with SIGTERM at the end."""
    state = tmp_path_factory.mktemp("state")
    env = {**os.environ, "APEX_STATE_DIR": str(state), "RAY_AUTH_MODE": "disabled"}
    http = free_port()
    args = [sys.executable, "-m", "services.serve", "deploy/serve/local.yaml", "--num-cpus", "8"]
    args += ["--http-port", str(http)]  # gRPC stays off, as in make serve
    args += ["--metrics-port", str(free_port())]
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for_line(proc, "Reward services up", timeout_s=240)
        yield {"env": env, "url": f"http://127.0.0.1:{http}", "state": state}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _rewards(url: str) -> list[dict]:
    return httpx.get(f"{url}/v1/rewards", timeout=30).json()["rewards"]


@pytest.mark.slow  # make serve, then a training run and sampling as processes: ~1-3 min
def test_train_sample_and_evaluate_against_running_services(served, tmp_path):
    before = _rewards(served["url"])
    assert json.loads((served["state"] / "rewards.json").read_text())["http"] == served["url"]
    train = [sys.executable, "-m", "trainer.main", "deploy/configs/local.yaml"]
    train += [
        "reward_service.deploy=false",
        f"logging.run_dir={tmp_path / 'runs'}",
        "training.epochs=1",
        "training.groups_per_epoch=2",
        "training.images_per_prompt=4",
        "training.optimizer_steps_per_epoch=1",
        "sampling.micro_batch_size=8",
        "evaluation.every_n_epochs=1",  # before and after the epoch: 2 samples each
        "evaluation.num_prompts=2",
        "evaluation.images_per_prompt=1",
        "logging.prometheus=false",
    ]
    done = subprocess.run(
        train, cwd=ROOT, env=served["env"], capture_output=True, text=True, timeout=600
    )
    console = done.stdout + done.stderr
    assert done.returncode == 0, console
    assert len(console.splitlines()) <= MAX_CONSOLE_LINES, console
    assert "1/1" in console.replace("\r", "\n").splitlines()[-1] or "1/1 [" in console
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "lora" / "pytorch_lora_weights.safetensors").is_file()
    eval_files = {p.name for p in (run / "eval").iterdir()}
    assert {"step_000000.png", "step_000001.png", "first_vs_latest.png"} <= eval_files
    assert str(run / "eval" / "first_vs_latest.png") in console  # named at the end
    assert _rewards(served["url"]) == before  # the running services were not replaced

    sample = [sys.executable, "-m", "trainer.sample", str(run), "--num", "2"]
    sample += ["--out", str(tmp_path / "samples")]
    done = subprocess.run(sample, cwd=ROOT, env=served["env"], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    images = sorted((tmp_path / "samples" / "tuned").glob("*.png"))
    assert len(images) == 2

    evaluate = [sys.executable, "-m", "services.eval"]
    evaluate += ["--rewards", "colorfulness,jpeg_compressibility"]
    evaluate += ["--images", str(tmp_path / "samples" / "tuned"), "--url", served["url"]]
    evaluate += ["--out", str(tmp_path / "eval.csv")]
    done = subprocess.run(
        evaluate, cwd=ROOT, env=served["env"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = (tmp_path / "eval.csv").read_text().splitlines()
    assert len(rows) == 3  # a header and one row per image


def test_deploy_false_without_running_services_says_how(tmp_path):
    env = {**os.environ, "APEX_STATE_DIR": str(tmp_path / "empty"), "RAY_AUTH_MODE": "disabled"}
    args = [sys.executable, "-m", "trainer.main", "deploy/configs/local-random.yaml"]
    args += ["reward_service.deploy=false", f"logging.run_dir={tmp_path / 'runs'}"]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no reward app 'rewards' runs on this machine" in done.stderr
    assert "make serve" in done.stderr
    assert not list((tmp_path / "runs").glob("*"))  # no run folder left behind
