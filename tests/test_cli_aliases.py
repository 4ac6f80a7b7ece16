"""Every renamed flag: the old spelling parses to the same dest and value as the new one, on the command line and
as a YAML key; the shared device / loader / output groups are declared the same way everywhere."""
import importlib

import pytest

from common.config import resolve_args
from common.errors import UserError
from common.flags import route
from common.options import eval_batch_size

# (script module, new flag, old flag, dest, the other arguments the parser requires)
RENAMED = [
    ("data.split", "--data-root", "--root", "data_root", []),
    ("data.synthetic.prepare", "--output-dir", "--out", "output_dir", []),
    ("data.synthetic.train_clip", "--data-root", "--data", "data_root", ["--out", "c.pt"]),
    ("data.dior.prepare", "--output-dir", "--out", "output_dir", ["--raw", "r"]),
    ("data.dota.prepare", "--output-dir", "--out", "output_dir", ["--raw", "r"]),
    ("data.fgsc23.prepare", "--output-dir", "--out", "output_dir", ["--raw", "r"]),
    ("CDTG.train", "--init-weights", "--ckpt", "init_weights", []),
    ("CDTG.generate", "--weights", "--ckpt", "weights", []),
    ("DSVA.train", "--setting", "--mode", "setting", []),
    ("DSVA.annotate", "--output-dir", "--out", "output_dir", []),
    ("DSVA.test", "--output-dir", "--out", "output_dir", ["--weights", "w.pt"]),
    ("KMDN.test", "--output-dir", "--out", "output_dir", ["--weights", "w.pt"]),
    ("Classification.test", "--output-dir", "--out", "output_dir", ["--weights", "w.pt"]),
    ("benchmarks.long_tail", "--output-dir", "--out", "output_dir", []),
    ("scripts.quickstart_report", "--output-dir", "--out", "output_dir", []),
    ("scripts.quickstart_report", "--data-root", "--data", "data_root", []),
]


def parser_of(module: str):
    return importlib.import_module(module).get_args_parser()


@pytest.mark.parametrize("module,new,old,dest,rest", RENAMED, ids=[f"{m}:{o}" for m, _, o, _, _ in RENAMED])
def test_old_spelling_parses_to_the_new_dest(module, new, old, dest, rest):
    value = "gzsl" if dest == "setting" else "x/y"
    p = parser_of(module)
    assert getattr(p.parse_args([*rest, new, value]), dest) == value
    p = parser_of(module)
    assert getattr(p.parse_args([*rest, old, value]), dest) == value


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("module,stage,old_key,new_key,value,dest,rest", [
    ("data.split", "split", "root", "data_root", "/d", "data_root", []),
    ("DSVA.train", "dsva", "mode", "setting", "gzsl", "setting", []),
    ("CDTG.train", "cdtg_train", "ckpt", "init_weights", "/g.pt", "init_weights", []),
    ("CDTG.generate", "cdtg_generate", "ckpt", "weights", "/g.pt", "weights", []),
    ("DSVA.annotate", "dsva_annotate", "out", "output_dir", "/o", "output_dir", []),
    ("data.synthetic.train_clip", "train_clip", "data", "data_root", "/d", "data_root", ["--out", "c.pt"]),
])
def test_old_yaml_key_sets_the_new_dest(tmp_path, module, stage, old_key, new_key, value, dest, rest):
    for key in (old_key, new_key, new_key.replace("_", "-")):
        cfg = write(tmp_path, f"{stage}:\n  {key}: {value}\n")
        assert getattr(resolve_args(parser_of(module), stage, ["--config", cfg, *rest]), dest) == value


def test_old_and_new_yaml_key_together_is_an_error(tmp_path):
    cfg = write(tmp_path, "dsva:\n  mode: zsl\n  setting: gzsl\n")
    with pytest.raises(UserError, match=r"keys 'mode' and 'setting' in section 'dsva' of .*c\.yaml set the same "
                                        r"option \(--setting\); keep one"):
        resolve_args(parser_of("DSVA.train"), "dsva", ["--config", cfg])


def test_a_yaml_value_still_goes_through_the_flag_checks(tmp_path):
    cfg = write(tmp_path, "dsva:\n  mode: both\n")
    with pytest.raises(UserError, match=r"key 'mode': invalid choice: 'both'"):
        resolve_args(parser_of("DSVA.train"), "dsva", ["--config", cfg])


def test_routing_knows_aliases():
    """A flag withheld from a script stays withheld under its old name; an --env flag is its exact spelling (so
    that 03_kmdn.sh's RUNS=--output-dir for the training runs leaves KMDN/test.py's --out report folder to the
    user, as before the rename)."""
    parsers = {"split": ("data/split.py", parser_of("data.split"))}
    with pytest.raises(UserError, match=r"sets --root itself: set the environment variable DATA_ROOT=\.\.\. instead"):
        route(["--root", "/d"], parsers, {}, {"--data-root": "DATA_ROOT", "--root": "DATA_ROOT"}, "02_split.sh")
    parsers = {"train": ("KMDN/train.py", parser_of("KMDN.train")), "test": ("KMDN/test.py", parser_of("KMDN.test"))}
    assert route(["--out", "/r"], parsers, {}, {"--output-dir": "RUNS"}, "03_kmdn.sh") == {"train": [],
                                                                                           "test": ["--out", "/r"]}
    parsers = {"annotate": ("DSVA/annotate.py", parser_of("DSVA.annotate")),
               "train": ("DSVA/train.py", parser_of("DSVA.train"))}
    with pytest.raises(UserError, match="no script of s.sh accepts --out"):
        route(["--out", "/o"], parsers, {"annotate": {"--output-dir"}}, {}, "s.sh")
    assert route(["--mode", "gzsl"], parsers, {}, {}, "s.sh") == {"annotate": [], "train": ["--mode", "gzsl"]}


@pytest.mark.parametrize("module,rest", [("Classification.train", []), ("Classification.crt", ["--weights", "w"]),
                                         ("KMDN.train", ["--part", "head"]), ("KMDN.distill", [])])
def test_eval_batch_size_defaults_to_twice_the_batch_size(module, rest):
    args = parser_of(module).parse_args([*rest, "--batch-size", "12"])
    assert args.eval_batch_size is None and eval_batch_size(args) == 24
    args = parser_of(module).parse_args([*rest, "--batch-size", "12", "--eval-batch-size", "5"])
    assert eval_batch_size(args) == 5


SHARED = {"--device": ("auto", ["auto", "cuda", "cpu"])}
ENTRY_POINTS = ["Classification.train", "Classification.crt", "Classification.test", "KMDN.train", "KMDN.distill",
                "KMDN.test", "CDTG.train", "CDTG.generate", "CDTG.evaluate", "DSVA.train", "DSVA.annotate",
                "DSVA.test", "benchmarks.cdtg_step", "benchmarks.classifier_throughput", "benchmarks.dsva_throughput"]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_shared_groups_are_declared_alike(module):
    actions = parser_of(module)._option_string_actions
    device = actions["--device"]
    assert (device.default, device.choices) == SHARED["--device"]
    if "--workers" in actions:
        assert actions["--workers"].type("0") == 0
        with pytest.raises(Exception):
            actions["--workers"].type("-1")
    if "--on-corrupt" in actions:
        assert (actions["--on-corrupt"].default, actions["--on-corrupt"].choices) == ("skip", ["skip", "error"])
