import argparse

import pytest

from common.config import add_config_arg, resolve_args as parse_args
from common.errors import UserError


def parser():
    p = argparse.ArgumentParser()
    add_config_arg(p)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--model", default="resnet50")
    return p


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_then_config_then_flags(tmp_path):
    cfg = write(tmp_path, "classification:\n  lr: 0.01\n  epochs: 3\nother:\n  lr: 5\n")
    args = parse_args(parser(), "classification", ["--config", cfg, "--epochs", "7"])
    assert args.lr == 0.01          # config beats default
    assert args.epochs == 7         # flag beats config
    assert args.model == "resnet50"  # default kept
    assert args.stage == "classification"
    assert parse_args(parser(), "classification", []).lr == 1e-3


def test_dashed_keys_and_missing_section(tmp_path):
    cfg = write(tmp_path, "classification:\n  lr-drop: 1\n")
    p = parser()
    p.add_argument("--lr-drop", type=int, default=0)
    assert parse_args(p, "classification", ["--config", cfg]).lr_drop == 1
    assert parse_args(parser(), "kmdn", ["--config", cfg]).lr == 1e-3


def test_unknown_key_names_key_and_file(tmp_path):
    cfg = write(tmp_path, "classification:\n  learning_rate: 0.1\n")
    with pytest.raises(UserError, match=r"unknown key 'learning_rate' in section 'classification' of .*c\.yaml"):
        parse_args(parser(), "classification", ["--config", cfg])


def test_missing_and_invalid_config(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        parse_args(parser(), "classification", ["--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(UserError, match="not valid YAML"):
        parse_args(parser(), "classification", ["--config", write(tmp_path, "a: [1,\n")])


def test_required_flag_may_come_from_config(tmp_path):
    p = parser()
    p.add_argument("--data-root", required=True)
    cfg = write(tmp_path, "classification:\n  data_root: /x\n")
    assert parse_args(p, "classification", ["--config", cfg]).data_root == "/x"
    p = parser()
    p.add_argument("--data-root", required=True)
    with pytest.raises(SystemExit):
        parse_args(p, "classification", [])
