"""Flag spellings: the original authors' (`--ckpt`) stay aliases of ours; this repository's own former
spellings are gone and refused, on the command line and as YAML keys; the shared device / loader / output
groups are declared the same way everywhere."""
import argparse
import importlib

import pytest

from common.config import parse_args, resolve_args
from common.errors import UserError
from common.flags import route
from common.options import eval_batch_size

# (script module, flag, the original authors' spelling, dest): upstream's README trains and generates with
# --ckpt
ORIGINAL_SPELLINGS = [
    ("CDTG.train", "--init-weights", "--ckpt", "init_weights"),
    ("CDTG.generate", "--weights", "--ckpt", "weights"),
]
# (script module, a former spelling of this repository, the other arguments the parser requires)
DROPPED = [
    ("data.split", "--root", ["--data-root", "d"]),
    ("data.synthetic.prepare", "--out", ["--output-dir", "o"]),
    ("data.synthetic.train_clip", "--data", ["--out", "c.pt", "--data-root", "d"]),
    ("data.dior.prepare", "--out", ["--raw", "r", "--output-dir", "o"]),
    ("DSVA.train", "--mode", []),
    ("DSVA.annotate", "--out", []),
    ("DSVA.test", "--out", ["--weights", "w.pt"]),
    ("KMDN.test", "--out", ["--weights", "w.pt"]),
    ("Classification.test", "--out", ["--weights", "w.pt"]),
    ("benchmarks.long_tail", "--out", []),
    ("scripts.quickstart_report", "--data", []),
]


def parser_of(module: str):
    return importlib.import_module(module).get_args_parser()


@pytest.mark.parametrize("module,new,old,dest", ORIGINAL_SPELLINGS,
                         ids=[f"{m}:{o}" for m, _, o, _ in ORIGINAL_SPELLINGS])
def test_the_original_spelling_parses_to_our_dest(module, new, old, dest):
    assert getattr(parser_of(module).parse_args([new, "x/y"]), dest) == "x/y"
    assert getattr(parser_of(module).parse_args([old, "x/y"]), dest) == "x/y"


@pytest.mark.parametrize("module,old,rest", DROPPED, ids=[f"{m}:{o}" for m, o, _ in DROPPED])
def test_a_former_spelling_is_refused(module, old, rest, capsys):
    """Also where it is the start of the new one (--out of --output-dir, --data of --data-root)."""
    with pytest.raises(SystemExit) as e:
        parse_args(parser_of(module), "s", [*rest, old, "x"])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: unrecognized arguments: {old} x (see --help)\n"


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("module,stage,key,value,dest", [
    ("CDTG.train", "cdtg_train", "ckpt", "/g.pt", "init_weights"),
    ("CDTG.generate", "cdtg_generate", "ckpt", "/g.pt", "weights"),
    ("CDTG.generate", "cdtg_generate", "weights", "/g.pt", "weights"),
])
def test_the_original_yaml_key_sets_our_dest(tmp_path, module, stage, key, value, dest):
    cfg = write(tmp_path, f"{stage}:\n  {key}: {value}\n")
    assert getattr(resolve_args(parser_of(module), stage, ["--config", cfg]), dest) == value


def test_a_former_yaml_key_is_refused_by_name(tmp_path):
    cfg = write(tmp_path, "split:\n  root: /d\n")
    with pytest.raises(UserError, match=r"'root'"):
        resolve_args(parser_of("data.split"), "split", ["--config", cfg])


def test_the_original_and_our_yaml_key_together_is_an_error(tmp_path):
    cfg = write(tmp_path, "cdtg_generate:\n  ckpt: /a.pt\n  weights: /b.pt\n")
    with pytest.raises(UserError, match=r"keys 'ckpt' and 'weights' in section 'cdtg_generate' of .*c\.yaml "
                                        r"set the same option \(--weights\); keep one"):
        resolve_args(parser_of("CDTG.generate"), "cdtg_generate", ["--config", cfg])


def test_a_yaml_value_still_goes_through_the_flag_checks(tmp_path):
    cfg = write(tmp_path, "dsva:\n  setting: both\n")
    with pytest.raises(UserError, match=r"key 'setting': invalid choice: 'both'"):
        resolve_args(parser_of("DSVA.train"), "dsva", ["--config", cfg])


def test_routing_knows_aliases():
    """A flag withheld from a script stays withheld under its other spelling; an --env flag is refused in
    every spelling the stage lists."""
    parsers = {"generate": ("CDTG/generate.py", parser_of("CDTG.generate")),
               "expand": ("CDTG/expand.py", parser_of("CDTG.expand"))}
    with pytest.raises(UserError,
                       match=r"sets --ckpt itself: set the environment variable GENERATOR=\.\.\. instead"):
        route(["--ckpt", "/g.pt"], parsers, {}, {"--weights": "GENERATOR", "--ckpt": "GENERATOR"}, "05.sh")
    with pytest.raises(UserError, match="no script of s.sh accepts --ckpt"):
        route(["--ckpt", "/g.pt"], parsers, {"generate": {"--weights"}}, {}, "s.sh")
    assert route(["--n-per-class", "3"], parsers, {}, {}, "s.sh") == {"generate": ["--n-per-class", "3"],
                                                                       "expand": ["--n-per-class", "3"]}


@pytest.mark.parametrize("module,rest",
                         [("Classification.train", []), ("Classification.crt", ["--weights", "w"]),
                          ("KMDN.train", ["--part", "head"]), ("KMDN.distill", [])])
def test_eval_batch_size_defaults_to_twice_the_batch_size(module, rest):
    args = parser_of(module).parse_args([*rest, "--batch-size", "12"])
    assert args.eval_batch_size is None and eval_batch_size(args) == 24
    args = parser_of(module).parse_args([*rest, "--batch-size", "12", "--eval-batch-size", "5"])
    assert eval_batch_size(args) == 5


SHARED = {"--device": ("auto", ["auto", "cuda", "cpu"])}
ENTRY_POINTS = ["Classification.train", "Classification.crt", "Classification.test", "KMDN.train",
                "KMDN.distill", "KMDN.test", "CDTG.train", "CDTG.generate", "CDTG.evaluate", "DSVA.train",
                "DSVA.annotate", "DSVA.test", "benchmarks.cdtg_step", "benchmarks.classifier_throughput",
                "benchmarks.dsva_throughput"]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_shared_groups_are_declared_alike(module):
    actions = parser_of(module)._option_string_actions
    device = actions["--device"]
    assert (device.default, device.choices) == SHARED["--device"]
    if "--workers" in actions:
        assert actions["--workers"].type("0") == 0
        with pytest.raises(argparse.ArgumentTypeError):
            actions["--workers"].type("-1")
    if "--on-corrupt" in actions:
        on_corrupt = actions["--on-corrupt"]
        assert (on_corrupt.default, on_corrupt.choices) == ("skip", ["skip", "error"])


@pytest.mark.parametrize("module", ["CDTG.train", "CDTG.evaluate", "DSVA.train", "DSVA.annotate",
                                    "benchmarks.cdtg_step"])
def test_clip_flags_are_declared_alike(module):
    actions = parser_of(module)._option_string_actions
    assert actions["--clip-model"].help.startswith("open_clip model name")
    assert actions["--clip-pretrained"].help.startswith("open_clip pretrained tag, checkpoint file, Hugging "
                                                        "Face CLIP folder or Hub id")
    if "--clip-prompt" in actions:
        assert "{name} = class name, {article} = a/an" in actions["--clip-prompt"].help
