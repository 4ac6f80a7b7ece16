import argparse

import pytest

from common.config import add_config_arg
from common.config import resolve_args as parse_args
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
    with pytest.raises(UserError,
                       match=r"unknown key 'learning_rate' in section 'classification' of .*c\.yaml"):
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


def test_base_sections_merge_under_the_file_that_names_them(tmp_path):
    (tmp_path / "shared.yaml").write_text("classification:\n  lr: 0.5\n  epochs: 3\nkmdn:\n  lr: 7\n")
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text("base: ../shared.yaml\nclassification:\n  epochs: 9\n")
    args = parse_args(parser(), "classification", ["--config", str(child)])
    assert (args.lr, args.epochs) == (0.5, 9)  # the base's key, the child's key over the base's
    assert parse_args(parser(), "kmdn", ["--config", str(child)]).lr == 7  # a section only the base has
    assert parse_args(parser(), "classification", ["--config", str(child), "--epochs", "2"]).epochs == 2


def test_base_chain_child_wins_under_any_spelling(tmp_path):
    """A grandchild over a child over a base; the child spells the key as an old alias of the base's."""
    p = parser()
    p.add_argument("--data-root", "--root", dest="data_root")
    (tmp_path / "a.yaml").write_text("classification:\n  data_root: /a\n  lr: 0.1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nclassification:\n  root: /b\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\nclassification:\n  epochs: 4\n")
    args = parse_args(p, "classification", ["--config", str(tmp_path / "c.yaml")])
    assert (args.data_root, args.lr, args.epochs) == ("/b", 0.1, 4)


def test_missing_or_cyclic_base_is_one_line(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: nope.yaml\nclassification:\n  lr: 1\n")
    with pytest.raises(UserError) as e:
        parse_args(parser(), "classification", ["--config", str(child)])
    assert str(e.value) == (f"config file {child}: its base {tmp_path / 'nope.yaml'} does not exist; `base:` "
                            f"is a path relative to the file that names it")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: ./a.yaml\n")
    with pytest.raises(UserError) as e:
        parse_args(parser(), "classification", ["--config", str(tmp_path / "a.yaml")])
    assert str(e.value) == (f"config file {tmp_path / 'b.yaml'}: its base {tmp_path / 'a.yaml'} is already "
                            f"in the chain {tmp_path / 'a.yaml'} -> {tmp_path / 'b.yaml'}; a base cannot "
                            "lead back to itself")
    (tmp_path / "self.yaml").write_text("base: [x]\n")
    with pytest.raises(UserError, match=r"`base:` must be the path of another config file, got \['x'\]"):
        parse_args(parser(), "classification", ["--config", str(tmp_path / "self.yaml")])


def test_a_bad_key_in_a_base_names_the_base(tmp_path):
    (tmp_path / "a.yaml").write_text("classification:\n  learning_rate: 1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(UserError,
                       match=r"unknown key 'learning_rate' in section 'classification' of .*a\.yaml"):
        parse_args(parser(), "classification", ["--config", str(tmp_path / "b.yaml")])


# the six upstream DSVA scripts: (split, setting, seed, proposal start epoch, gamma, group lasso, prototype
# lasso)
RSSDIVCS_EXPERIMENTS = {"zsl_61": ("61", "zsl", 4702, None, 1e-4, 0.0, 0.0),
                        "zsl_52": ("52", "zsl", 3866, -1, 1e-4, 0.0, 0.0),
                        "zsl_43": ("43", "zsl", 3982, -1, 1e-4, 0.0, 0.0),
                        "gzsl_61": ("61", "gzsl", 0, -1, 1e-4, 0.0, 0.0),
                        "gzsl_52": ("52", "gzsl", 9905, -1, 1.4e-4, 5e-6, 5e-4),
                        "gzsl_43": ("43", "gzsl", 1342, -1, 1e-4, 0.0, 0.0)}


@pytest.mark.parametrize("name", sorted(RSSDIVCS_EXPERIMENTS))
def test_rssdivcs_experiment_configs(name):
    """Each experiment config: its own flags over the shared configs/rssdivcs.yaml (its base)."""
    import os

    from conftest import REPO
    from DSVA import train
    path = os.path.join(REPO, "configs", "rssdivcs", f"{name}.yaml")
    a = parse_args(train.get_args_parser(), "dsva", ["--config", path])
    assert (a.split, a.setting, a.seed, a.proposal_start_epoch, a.gamma, a.regular, a.l_regular) == \
        RSSDIVCS_EXPERIMENTS[name]
    assert a.name == name
    shared = (a.dataset, a.data_root, a.clip_pretrained, a.epochs, a.ways, a.shots, a.batches_per_epoch,
              a.l_attri)
    assert shared == ("rssdivcs", "data/rssdivcs/RSSDIVCS", "flax-community/clip-rsicd", 30, 8, 3, 300, 8e-2)
    assert sorted(f[:-5] for f in os.listdir(os.path.dirname(path))) == sorted(RSSDIVCS_EXPERIMENTS)
