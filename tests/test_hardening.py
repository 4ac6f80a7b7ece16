"""The shared mechanisms behind one-line errors: config values, file readers, safe checkpoint loads, resume
settings, the run-folder lock, failed starts, crash litter, a full disk, Ctrl-C and per-rank seeds."""
import argparse
import errno
import json
import multiprocessing
import os
import signal
import time

import pytest
import torch
import yaml

from common import checkpoint, errors, rundir
from common.config import add_config_arg, parse_args, resolve_args
from common.errors import UserError, cli
from common.jsonfile import read_json
from common.layout import read_classes
from common.split import load_split
from common.training import add_fit_args, add_image_args
from conftest import assert_one_line_error, run_main, run_script

# ------------------------------------------------------------------ 1: YAML values parsed as flags are

def stage_parser():
    p = argparse.ArgumentParser()
    add_config_arg(p)
    p.add_argument("--data-root", required=True)
    p.add_argument("--train-list", action="append", default=None)
    p.add_argument("--upstream-shortcut-init", action="store_true")
    add_image_args(p)
    add_fit_args(p, epochs=50, lr_drop_epochs=[32])
    return p


def config(tmp_path, body: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text("classification:\n" + "".join(f"  {line.strip()}\n"
                                                  for line in body.strip().splitlines()))
    return str(path)


@pytest.mark.parametrize("body, fragment", [
    ("norm: imagnet", "key 'norm': invalid choice: 'imagnet' (choose from"),
    ('hflip: "no"', "key 'hflip': must be true or false, got 'no'"),
    ("epochs: [1, 2]", "key 'epochs': takes one value, got the list [1, 2]"),
    ("batch_size: 0", "key 'batch_size': must be a positive integer, got 0"),
    ("lr: fast", "key 'lr': invalid float value: 'fast'"),
    ("upstream_shortcut_init: 1", "key 'upstream_shortcut_init': must be true or false, got 1"),
])
def test_bad_yaml_value_names_key_file_and_allowed_values(tmp_path, body, fragment):
    cfg = config(tmp_path, "data_root: /d\n" + body)
    with pytest.raises(UserError) as e:
        resolve_args(stage_parser(), "classification", ["--config", cfg])
    assert str(e.value).startswith(f"config file {cfg}, section 'classification': ")
    assert fragment in str(e.value)


def test_yaml_values_get_the_flags_types(tmp_path):
    cfg = config(tmp_path, """
        data_root: /d
        lr_drop_epochs: 5
        hflip: false
        upstream-shortcut-init: true
        lr: 1e-4
        train_list: [a.txt, b.txt]
        workers: null
    """)
    args = resolve_args(stage_parser(), "classification", ["--config", cfg])
    assert (args.data_root, args.lr_drop_epochs, args.hflip, args.upstream_shortcut_init) == ("/d", [5],
                                                                                              False, True)
    # YAML reads 1e-4 as a string; argparse's float parses it
    assert args.lr == 1e-4 and isinstance(args.lr, float)
    assert args.train_list == ["a.txt", "b.txt"] and args.workers is None
    args = resolve_args(stage_parser(), "classification",
                        ["--config", cfg, "--train-list", "c.txt", "--hflip"])
    assert args.train_list == ["c.txt"] and args.hflip is True  # the command line replaces the YAML's list


def test_flag_errors_and_binary_config_are_one_line(tmp_path, capsys):
    for argv, fragment in ((["--data-root", "d", "--batch-size", "0"], ("argument --batch-size: must be a "
                                                                        "positive integer, got 0")),
                           (["--data-root", "d", "--epochs", "0"],
                            "argument --epochs: must be a positive integer"),
                           (["--config", str(tmp_path / "b.yaml")], "is not UTF-8 text")):
        (tmp_path / "b.yaml").write_bytes(b"\xff\xfe\x00binary")
        with pytest.raises(SystemExit) as e:
            parse_args(stage_parser(), "classification", argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith("error: ") and fragment in err, err


def test_bad_config_value_stops_a_script_before_its_run_folder(tmp_path, synth_root):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("classification:\n  norm: foo\n")
    out = tmp_path / "run"
    from Classification import train as classification_train
    proc = run_main(classification_train, "classification", "--config", cfg, "--data-root", synth_root,
                    "--weights", "none", "--output-dir", out, check=False)
    assert_one_line_error(proc, "key 'norm'", str(cfg), "'half', 'imagenet'")
    assert not out.exists()


# ------------------------------------------------------------------ 2 and 11: one reader per kind of file

def test_damaged_files_are_named(tmp_path):
    bad = tmp_path / "t.pt"
    bad.write_text("x\n")
    with pytest.raises(UserError, match=f"^weights file {bad} could not be read: it is not a PyTorch "
                                        f"checkpoint, or is damaged$"):
        checkpoint.load(str(bad), "weights file")
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.ones(100)}}, good)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:300])
    with pytest.raises(UserError,
                       match="cut.pt could not be read: it is truncated, or not a PyTorch checkpoint"):
        checkpoint.load(str(tmp_path / "cut.pt"), "weights file")
    (tmp_path / "l.json").write_text("[1, 2]")
    with pytest.raises(UserError, match=r"split file .*l.json must hold an object \(\{...\}\) at its top "
                                        r"level, not list"):
        load_split(str(tmp_path / "l.json"))
    root = tmp_path / "root"
    root.mkdir()
    (root / "classes.json").write_text('{"dataset": "x", "names": ["a",')
    with pytest.raises(UserError,
                       match=r"classes file .*classes.json is not valid JSON \(Expecting value, line 1\)"):
        read_classes(str(root))
    (root / "classes.json").write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        read_json(str(root / "classes.json"), "classes file", expect=dict)


class RunsCode:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": RunsCode(target)}, path)
    with pytest.raises(UserError, match=r"holds a posix.system object, which a safe \(weights-only\) load "
                                        r"refuses .*pass --trust-checkpoint"):
        checkpoint.load(str(path))
    assert not target.exists()


def test_own_and_original_checkpoint_types_load_safely(tmp_path):
    import numpy as np
    torch.manual_seed(3)
    state = checkpoint.rng_state()
    expected = torch.rand(3), np.random.rand(), __import__("random").random()
    path = tmp_path / "ck.pt"
    checkpoint.atomic_save({"rng": state, "args": argparse.Namespace(size=256), "acc": np.float64(0.5),
                            "history": [{"zsl": np.float32(0.25)}]}, str(path))
    ck = checkpoint.load(str(path))
    assert ck["args"].size == 256 and ck["acc"] == 0.5
    checkpoint.set_rng_state(ck["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and np.random.rand() == expected[1]
    assert __import__("random").random() == expected[2]


def test_trust_checkpoint_flag_allows_full_pickle(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"obj": argparse.ArgumentParser}, path)  # a class: refused by a weights-only load
    with pytest.raises(UserError, match="argparse.ArgumentParser object"):
        checkpoint.load(str(path))
    p = argparse.ArgumentParser()
    add_config_arg(p)
    try:
        resolve_args(p, "x", ["--trust-checkpoint"])
        assert checkpoint.load(str(path))["obj"] is argparse.ArgumentParser
    finally:
        resolve_args(p, "x", [])
    assert checkpoint.TRUSTED is False


# ------------------------------------------------------------------ 3, 5, 8: the run folder

def run_args(out, **kw):
    base = {"stage": "t", "name": "n", "output_dir": str(out), "seed": 0, "resume": False, "overwrite": False,
            "lr": 1e-3, "batch_size": 32, "workers": 4, "epochs": 3, "device": "cpu", "lr_drop_epochs": [2]}
    return argparse.Namespace(**{**base, **kw})


def fake_checkpoint(out):
    checkpoint.atomic_save({"epoch": 0}, os.path.join(out, "ckpt_last.pt"))


def test_resume_refuses_changed_settings_and_records_honestly(tmp_path):
    out = tmp_path / "run"
    rundir.prepare(run_args(out))
    fake_checkpoint(out)
    with pytest.raises(UserError) as e:
        rundir.prepare(run_args(out, resume=True, lr=0.5, batch_size=4))
    assert str(e.value) == (f"--resume with other settings than the run's {out}/args.yaml: --batch-size 4 "
                            "(the run has 32); --lr 0.5 (the run has 0.001); resume with the run's own "
                            f"settings (drop those flags), or start a new run (another --name)")
    with pytest.raises(UserError, match=r"^--resume continues the run in .* and --overwrite deletes it; pass "
                                        r"only one of them$"):
        rundir.prepare(run_args(out, resume=True, overwrite=True))
    rundir.prepare(run_args(out, resume=True, workers=0, epochs=5, device="auto"))
    recorded = yaml.safe_load((out / "args.yaml").read_text())
    assert (recorded["epochs"], recorded["workers"], recorded["resume"], recorded["lr"]) == (5, 4, False,
                                                                                             1e-3)
    meta = json.loads((out / "meta.json").read_text())
    assert len(meta["resumes"]) == 1


def test_failed_start_is_reused_and_cases_are_named(tmp_path, capsys):
    out = tmp_path / "run"
    rundir.prepare(run_args(out))  # a start that then failed: only args.yaml and meta.json
    with pytest.raises(UserError, match=r"no .*ckpt_last.pt to continue from \(its start failed before the "
                                        r"first checkpoint\); drop --resume"):
        rundir.prepare(run_args(out, resume=True))
    rundir.prepare(run_args(out, lr=0.1))
    said = capsys.readouterr().out
    assert "holds a start that stopped before its first checkpoint; starting it again" in said
    assert yaml.safe_load((out / "args.yaml").read_text())["lr"] == 0.1
    (out / "metrics.jsonl").write_text("{}\n")  # stopped after an epoch's row, before its checkpoint
    (out / "samples").mkdir()
    rundir.prepare(run_args(out))
    assert "starting it again" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == [".lock", "args.yaml", "meta.json"]
    (out / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="already exists and holds outputs but no checkpoint to resume from; "
                                        "pass --overwrite"):
        rundir.prepare(run_args(out, stage="another stage"))
    fake_checkpoint(out)
    with pytest.raises(UserError, match=r"already exists and holds a run \(ckpt_last.pt\); pass --resume"):
        rundir.prepare(run_args(out))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError,
                       match="^--output-dir .*file is a file, not a folder; choose a folder path$"):
        rundir.prepare(run_args(tmp_path / "file"))


@pytest.mark.slow
def test_failed_start_does_not_block_the_rerun(tmp_path, synth_root):
    out = tmp_path / "run"
    argv = ["Classification/train.py", "--data-root", synth_root, "--output-dir", str(out), "--model",
            "resnet0", "--weights", "none", "--workers", "0", "--device", "cpu"]
    first = run_script(*argv, check=False)
    second = run_script(*argv, check=False)
    assert first.returncode == second.returncode != 0
    assert "already exists" not in second.stderr and "resnet0" in second.stderr.splitlines()[-1]


# ------------------------------------------------------------------ 4: one run per folder

def _start(out, barrier, results):
    barrier.wait()
    try:
        rundir.prepare(run_args(out))
        results.put("ran")
        time.sleep(1.5)  # a run holds its folder
    except UserError as e:
        results.put(str(e))


@pytest.mark.slow
def test_two_concurrent_starts_exactly_one_runs(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    out = tmp_path / "run"
    procs = [ctx.Process(target=_start, args=(out, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = sorted((results.get(timeout=60) for _ in procs), key=lambda r: r != "ran")
    for p in procs:
        p.join(timeout=60)
    assert got[0] == "ran" and got[1] != "ran", got
    assert got[1] == (f"run folder {out} is in use by another process (it holds {out}/.lock); wait for that "
                      f"run to end, or choose another --name"), got


# ------------------------------------------------------------------ 6: crash litter, full disk, file mode

def test_stale_temporaries_removed_and_mode_like_other_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    rundir.prepare(run_args(out))
    fake_checkpoint(out)
    (out / ".tmp_ckpt_last.pt.dead.pt").write_bytes(b"half")
    rundir.prepare(run_args(out, resume=True))
    assert not (out / ".tmp_ckpt_last.pt.dead.pt").exists()
    assert "left by a process killed while saving" in capsys.readouterr().out
    old = os.umask(0o022)
    try:
        checkpoint.atomic_save({"a": 1}, str(out / "m.pt"))
    finally:
        os.umask(old)
    assert os.stat(out / "m.pt").st_mode & 0o777 == 0o644 == os.stat(out / "args.yaml").st_mode & 0o777


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt_last.pt"
    checkpoint.atomic_save({"epoch": 1}, str(path))

    def full(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError) as e:
        checkpoint.atomic_save({"epoch": 2}, str(path))
    assert str(e.value) == (f"no space left on {tmp_path} while saving ckpt_last.pt; the previous checkpoint "
                            f"is intact; free some space and resume")
    monkeypatch.undo()
    assert checkpoint.load(str(path))["epoch"] == 1 and os.listdir(tmp_path) == ["ckpt_last.pt"]


# ------------------------------------------------------------------ 8: Ctrl-C; 12: seeds per rank

def test_ctrl_c_is_one_line_saying_how_to_resume(tmp_path, capsys):
    out = tmp_path / "run"

    @cli
    def main():
        rundir.prepare(run_args(out))
        fake_checkpoint(out)
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 130
    assert capsys.readouterr().err == (f"interrupted; the last checkpoint is {out}/ckpt_last.pt: run the "
                                       f"same command with --resume to continue\n")


def test_ctrl_c_while_saving_waits_for_the_file(tmp_path):
    path = tmp_path / "ckpt_last.pt"
    with pytest.raises(KeyboardInterrupt), errors.deferred_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        checkpoint.atomic_save({"epoch": 3}, str(path))  # nested: the inner block defers it too
        saved = True
    assert saved and checkpoint.load(str(path))["epoch"] == 3 and os.listdir(tmp_path) == ["ckpt_last.pt"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# Ctrl-C delivered by tests/interrupting.py at the start of a call (@N) or after it (@N+), in each part of an
# epoch: (where, the last line, the epoch of ckpt_last.pt after it, or None)
SIGINT_MOMENTS = [
    ("common.engine:predict@1", "before the first checkpoint", None),  # the first epoch's evaluation
    ("common.rundir:MetricsLog.write@1+", "before the first checkpoint", None),  # a row, no checkpoint yet
    ("torch:save@1", "the last checkpoint", 0),  # inside the first checkpoint write: it is finished first
    ("common.engine:train_one_epoch@2", "the last checkpoint", 0),
]


@pytest.mark.slow
@pytest.mark.parametrize("moment, line, epoch", SIGINT_MOMENTS, ids=[m[0] for m in SIGINT_MOMENTS])
def test_sigint_during_training(tmp_path, synth_root, moment, line, epoch):
    """Exit 130, one line saying how to go on, an intact checkpoint; and doing what the line says finishes."""
    from Classification import train as classification_train
    out = tmp_path / "run"
    argv = ["Classification/train.py", "--data-root", synth_root, "--output-dir", str(out), "--model",
            "resnet18", "--weights", "none", "--img-size", "32", "--workers", "0", "--device", "cpu",
            "--epochs", "2", "--batch-size", "32"]
    proc = run_script("tests/interrupting.py", moment, *argv, check=False)
    assert proc.returncode == 130, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and line in last, last
    assert not [f for f in os.listdir(out) if f.startswith(checkpoint.TMP_PREFIX)]
    if epoch is None:
        assert last == (f"interrupted before the first checkpoint of {out}; run the same command again to "
                        "start it")
        assert not (out / "ckpt_last.pt").exists()
        again = run_main(classification_train, "classification", *argv[1:])
    else:
        assert last == (f"interrupted; the last checkpoint is {out}/ckpt_last.pt: run the same command with "
                        f"--resume to continue")
        assert checkpoint.load(str(out / "ckpt_last.pt"))["epoch"] == epoch
        again = run_main(classification_train, "classification", *argv[1:], "--resume")
    assert (out / "model_final.pt").exists(), again.stdout[-2000:]
    assert [r["epoch"] for r in rundir.MetricsLog(str(out)).rows()] == [0, 1]


def test_ddp_ranks_get_seed_plus_rank(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(rundir.dist, "get_rank", lambda: 3)
    monkeypatch.setattr(rundir.dist, "barrier", lambda: None)
    rundir.prepare(run_args(tmp_path / "run", seed=10), is_main=False)
    assert torch.initial_seed() == 13


def test_resume_accepts_settings_that_do_not_shape_the_result():
    """Loader workers and the evaluation batch size may change on --resume; the learning rate may not."""
    from common.errors import UserError
    from common.rundir import check_resume_settings
    recorded = {"lr": 0.001, "workers": 2, "eval_batch_size": 64}
    check_resume_settings(argparse.Namespace(lr=0.001, workers=0, eval_batch_size=256), recorded, "args.yaml")
    with pytest.raises(UserError, match=r"--lr 0.01 \(the run has 0.001\)"):
        check_resume_settings(argparse.Namespace(lr=0.01, workers=2, eval_batch_size=64), recorded,
                              "args.yaml")
