"""The driver's console: --verbose, the one progress bar's labels, run discovery, free ports."""

from __future__ import annotations

import socket

import pytest

from common.discovery import discovery_path, read_discovery, remove_discovery, write_discovery
from trainer.config import RewardConfig
from trainer.console import wants_verbose
from trainer.launch import config_differences, free_or_other
from trainer.outputs.progress import ProgressReporter, describe

NAMES = ["ocr", "jpeg_compressibility"]


def test_verbose_flag_becomes_the_config_key():
    assert wants_verbose(["cfg.yaml", "--verbose", "a=1"]) == (
        True,
        ["cfg.yaml", "a=1", "logging.verbose=true"],
    )
    assert wants_verbose(["cfg.yaml"]) == (False, ["cfg.yaml"])


def test_train_and_eval_numbers_are_labelled_apart():
    records = {
        "train": {"epoch": 4, "reward_mean": [0.61, -2.5], "weights": [0.75, 0.25]},
        "eval": {"step": 3, "reward_mean": [0.7, None]},
    }
    assert describe(records, NAMES) == (
        "train: ocr 0.61 jpeg -2.5 | λ 0.75 0.25 | eval@3: ocr 0.7 jpeg -"
    )
    assert describe({}, NAMES) == ""


def test_the_bar_follows_the_train_epoch_and_never_passes_the_total():
    bar = ProgressReporter(fetch=lambda: None, objectives=NAMES, epochs=5, enabled=False)
    from tqdm import tqdm

    bar.bar = tqdm(total=5, disable=True)
    bar.update({"eval": {"step": 0, "reward_mean": [0.5, -2.0]}})
    assert bar.bar.n == 0  # an evaluation does not advance the epochs
    bar.update({"train": {"epoch": 4, "reward_mean": [0.5, -2.0]}})
    assert bar.bar.n == 5
    bar.update({"train": {"epoch": 9}})
    assert bar.bar.n == 5


def test_off_a_terminal_the_bar_prints_a_line_only_when_something_changed():
    import io

    from tqdm import tqdm

    bar = ProgressReporter(fetch=lambda: None, objectives=NAMES, epochs=2, enabled=False)
    out = io.StringIO()  # not a terminal: tqdm writes a new line on every refresh
    bar.bar = tqdm(total=2, file=out, mininterval=0)
    record = {"train": {"epoch": 0, "reward_mean": [0.5, -2.0]}}
    for _ in range(20):  # the driver polls once a second while the job finishes
        bar.update(record)
    once = out.getvalue().count("\r")
    bar.update({"train": {"epoch": 1, "reward_mean": [0.6, -2.0]}})
    assert out.getvalue().count("\r") == once + 1  # the new epoch is shown, once
    for _ in range(20):
        bar.update(record | {"train": {"epoch": 1, "reward_mean": [0.6, -2.0]}})
    assert out.getvalue().count("\r") == once + 1


def test_discovery_file_is_read_while_its_process_lives(tmp_path, monkeypatch):
    monkeypatch.setenv("APEX_STATE_DIR", str(tmp_path))
    assert read_discovery("rewards") is None
    write_discovery("rewards", {"ray_address": "10.0.0.1:6379"})
    assert read_discovery("rewards")["ray_address"] == "10.0.0.1:6379"
    path = discovery_path("rewards")
    path.write_text('{"ray_address": "x", "pid": 999999999}')  # a process that is gone
    assert read_discovery("rewards") is None
    remove_discovery("rewards")  # not this process's file: it stays
    assert path.exists()
    write_discovery("rewards", {"ray_address": "y"})
    remove_discovery("rewards")
    assert not path.exists()


def test_a_taken_port_is_replaced_by_a_free_one(caplog):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        other = free_or_other(taken, "logging.metrics_port")
        assert other != taken
        assert f"logging.metrics_port {taken} is taken" in caplog.text
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", other))  # the replacement is really free


def test_config_differences_name_the_param_and_both_values():
    rewards = [RewardConfig(name="ocr", params={"num_threads": 1}), RewardConfig(name="deqa")]
    running = {"ocr": {"num_threads": 0, "engine": "onnx"}, "colorfulness": {}}
    assert config_differences(rewards, running) == [
        "rewards.0.params.num_threads: 1 here, 0 in the running app"
    ]
    both = config_differences(rewards, running, both_ways=True)
    assert "rewards.1.name: 'deqa' is not served by the running app" in both
    assert "the running app also serves 'colorfulness'" in both


@pytest.mark.parametrize("url", ["ftp://host:1", "127.0.0.1:8000"])
def test_a_reward_service_url_needs_a_known_scheme(url):
    from trainer.config import RewardServiceConfig

    with pytest.raises(ValueError, match="must start with http://, https:// or grpc://"):
        RewardServiceConfig(deploy=False, url=url)
    with pytest.raises(ValueError, match="set deploy=false"):
        RewardServiceConfig(url="http://127.0.0.1:8000")
