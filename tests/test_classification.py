"""Classification/train.py and test.py on the tiny embedded set: learning, exact resume, DDP, errors."""
import json
import os

import pytest
import torch

from Classification import train as classification_train
from conftest import assert_one_line_error, free_port, run_main, run_script

TINY = ["--model", "resnet18", "--weights", "none", "--img-size", "32", "--batch-size", "16",
        "--workers", "0", "--lr-drop-epochs", "2", "--device", "cpu"]


def train(synth_root, out, *extra, check=True):
    return run_main(classification_train, "classification", "--data-root", synth_root, "--output-dir", out,
                    *TINY, *extra, check=check)


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_train_loss_drops_and_report(synth_root, tmp_path):
    out = tmp_path / "run"
    train(synth_root, out, "--epochs", "4")
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[2]["lr"] == rows[0]["lr"] * 0.1
    res = json.loads((out / "results.json").read_text())
    assert {"oa", "macro_f1", "head_acc", "tail_acc"} <= set(res)
    assert sum(map(sum, res["confusion_matrix"])) == 40
    for f in ("confusion_matrix.png", "acc_vs_count.png", "args.yaml", "meta.json", "model_final.pt"):
        assert (out / f).is_file(), f
    # test.py on the exported weights reproduces the final evaluation, from inside Classification/
    proc = run_script("Classification/test.py", "--weights", str(out / "model_final.pt"), "--data-root",
                      synth_root, "--workers", "0", "--output-dir", str(tmp_path / "eval"), "--device", "cpu")
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert again["confusion_matrix"] == res["confusion_matrix"]
    assert "tail_acc" in proc.stdout


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(synth_root, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    train(synth_root, full, "--epochs", "3", "--eval-every", "3")
    train(synth_root, part, "--epochs", "3", "--eval-every", "3", "--stop-after", "2")
    assert not (part / "model_final.pt").exists()
    train(synth_root, part, "--epochs", "3", "--eval-every", "3", "--resume")
    a = torch.load(full / "model_final.pt")["model"]
    b = torch.load(part / "model_final.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in metrics(full)] == [r["train_loss"] for r in metrics(part)]


def test_existing_run_folder_is_refused(synth_root, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    proc = train(synth_root, out, "--epochs", "1", check=False)
    assert_one_line_error(proc, "already exists", "no checkpoint", "--overwrite")
    assert (out / "keep.txt").read_text() == "precious"


@pytest.mark.slow
def test_command_line_error_is_one_line_and_exit_2(tmp_path):
    proc = run_script("Classification/train.py", "--data-root", str(tmp_path / "nowhere"), *TINY, check=False)
    assert_one_line_error(proc, "nowhere", "does not exist")


def test_bad_input_errors(synth_root, tmp_path):
    proc = run_main(classification_train, "classification", "--data-root", tmp_path / "nowhere", *TINY,
                    check=False)
    assert_one_line_error(proc, "nowhere", "does not exist")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("classification:\n  epoch: 3\n")
    proc = run_main(classification_train, "classification", "--config", cfg, "--data-root", synth_root,
                    check=False)
    assert_one_line_error(proc, "unknown key 'epoch'", "c.yaml")
    lst = tmp_path / "extra.txt"
    lst.write_text("0/00000.jpg 0\n0/not_there.jpg 0\n")
    proc = train(synth_root, tmp_path / "r1", "--train-list", str(lst), check=False)
    assert_one_line_error(proc, "extra.txt line 2", "not_there.jpg")
    lst.write_text("0/00000.jpg 99\n")
    proc = train(synth_root, tmp_path / "r2", "--train-list", str(lst), check=False)
    assert_one_line_error(proc, "line 1", "label 99 is out of range")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


@pytest.mark.slow
def test_ddp_two_cpu_processes(synth_root, tmp_path):
    out = tmp_path / "ddp"
    run_script("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "Classification/train.py", "--data-root", synth_root, "--output-dir", str(out), *TINY,
               "--epochs", "2")
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [0, 1]  # written once, by rank 0
    res = json.loads((out / "results.json").read_text())
    assert sum(map(sum, res["confusion_matrix"])) == 40  # each test image counted exactly once


@pytest.mark.slow
def test_corrupt_image_stops_with_flag_and_is_skipped_by_default(synth_root, tmp_path):
    import shutil
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    (root / "train" / "0" / "00000.jpg").write_bytes(b"broken")
    proc = train(str(root), tmp_path / "stop", "--epochs", "1", "--on-corrupt", "error", "--workers", "1",
                 check=False)
    assert_one_line_error(proc, "00000.jpg is corrupt", "--on-corrupt skip")
    proc = train(str(root), tmp_path / "skip", "--epochs", "1")
    assert "skipped corrupt image" in proc.stderr and "00000.jpg" in proc.stderr
