"""The entry point fails fast, before Ray starts, on a bad config or prompt file."""

import pytest

from trainer.main import main


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "usage: python -m trainer.main" in capsys.readouterr().out


def test_an_invalid_config_fails_before_any_work(capsys, monkeypatch):
    import trainer.main as entry

    def no_work(*args, **kwargs):
        raise AssertionError("training started despite a bad config")

    monkeypatch.setattr(entry, "train", no_work)
    assert main(["deploy/configs/local.yaml", "training.lr=-1"]) == 2
    assert "training.lr" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["", "# only a comment\n"])
def test_an_empty_prompt_file_is_a_clear_error(tmp_path, capsys, content):
    empty = tmp_path / "prompts.txt"
    empty.write_text(content)
    assert main(["deploy/configs/local.yaml", f"data.train_prompts=[{empty}]"]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err


def test_an_unreadable_prompt_file_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nope.txt"
    assert main(["deploy/configs/local.yaml", f"data.eval_prompts=[{missing}]"]) == 2
    assert str(missing) in capsys.readouterr().err
