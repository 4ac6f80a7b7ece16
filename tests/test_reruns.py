"""What a stage does when run again after an interruption or after running out of GPU memory: an evaluation
interrupted anywhere is done again and equals an uninterrupted one; a finished one is left as it is; out of
GPU memory is one line naming the stage, the batch size and the flag, the checkpoint stays intact, and doing
what the line says finishes the job."""

import pytest
import torch
import torchvision

from common import backbones, checkpoint
from conftest import assert_one_line_error, run_main, run_script, tree


@pytest.fixture(scope="module")
def weights(synth_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("cls") / "model_final.pt"
    torch.manual_seed(0)
    checkpoint.export_weights(backbones.build_classifier("resnet18", 10, "none", verbose=False), str(path),
                              arch="resnet18", img_size=32, norm="half")
    return str(path)


# ------------------------------------------------------------------------------------ an evaluation run again

# Ctrl-C at the start of the evaluation, after the test pass, and inside the report (after results.md, before
# results.json: a report without its last file is unfinished)
@pytest.mark.slow
@pytest.mark.parametrize("moment", ["common.engine:predict@1", "common.report:summarize@1+",
                                    "common.report:confusion_matrix_png@1+"])
def test_interrupted_test_report_is_redone_by_the_same_command(synth_root, weights, tmp_path, moment):
    from Classification import test as cls_test
    argv = ["--weights", weights, "--data-root", synth_root, "--workers", "0", "--device", "cpu",
            "--logit-adjust", "1"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    run_main(cls_test, "classification_test", *argv, "--output-dir", whole)
    proc = run_script("tests/interrupting.py", moment, "Classification/test.py", *argv, "--output-dir",
                      stopped, check=False)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == "interrupted", proc.stderr[-2000:]
    assert not (stopped / "results.json").exists()
    run_main(cls_test, "classification_test", *argv, "--output-dir", stopped)
    assert tree(stopped) == tree(whole)
    again = run_main(cls_test, "classification_test", *argv, "--output-dir", stopped)
    assert "results.json is already finished with these settings; nothing to do" in again.stdout
    assert tree(stopped) == tree(whole)
    proc = run_main(cls_test, "classification_test", *argv, "--output-dir", stopped, "--norm", "imagenet",
                    check=False)
    assert_one_line_error(proc, "already holds the result of other settings: --norm 'imagenet' (it has None)",
                          "pass --overwrite")
    assert tree(stopped) == tree(whole)


# ------------------------------------------------------------------------------------ out of GPU memory

def run_out_of_memory(monkeypatch, when):
    """Make every ResNet forward for which when(module) is true raise CUDA's out-of-memory error."""
    forward = torchvision.models.ResNet.forward

    def failing(self, x):
        if when(self):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, x)

    monkeypatch.setattr(torchvision.models.ResNet, "forward", failing)


@pytest.mark.slow
def test_out_of_memory_in_training_and_evaluation(synth_root, tmp_path, monkeypatch):
    from Classification import train as cls_train
    out = tmp_path / "run"
    argv = ["--data-root", synth_root, "--output-dir", out, "--model", "resnet18", "--weights", "none",
            "--img-size", "32", "--workers", "0", "--device", "cpu", "--epochs", "2", "--batch-size", "16"]
    ckpt = out / "ckpt_last.pt"
    run_out_of_memory(monkeypatch, lambda m: m.training and ckpt.exists())  # the second epoch's training
    proc = run_main(cls_train, "classification", *argv, check=False)
    assert_one_line_error(proc, f"out of GPU memory in classification (training, --batch-size 16); the last "
                                f"checkpoint {ckpt} is intact, but --resume keeps the run's batch size: "
                                f"start again with --batch-size 8 and --overwrite (or another --name)")
    assert checkpoint.load(str(ckpt))["epoch"] == 0
    monkeypatch.undo()
    run_main(cls_train, "classification", *argv[:-1], "8", "--overwrite")  # what the line says
    assert (out / "model_final.pt").exists()

    # the second epoch's evaluation (twice --batch-size unless --eval-batch-size): --resume takes another one
    out2 = tmp_path / "run2"
    argv2 = [a if a != out else out2 for a in argv]
    run_out_of_memory(monkeypatch, lambda m: not m.training and (out2 / "ckpt_last.pt").exists())
    proc = run_main(cls_train, "classification", *argv2, check=False)
    assert_one_line_error(proc, "out of GPU memory in classification (evaluation, --eval-batch-size 32); "
                                f"the last checkpoint {out2 / 'ckpt_last.pt'} is intact: run the same "
                                f"command with --resume and --eval-batch-size 16")
    monkeypatch.undo()
    run_main(cls_train, "classification", *argv2, "--resume", "--eval-batch-size", "16")
    assert (out2 / "model_final.pt").exists()


def test_out_of_memory_before_a_checkpoint_and_in_a_test(synth_root, weights, tmp_path, monkeypatch):
    from Classification import test as cls_test
    run_out_of_memory(monkeypatch, lambda m: True)
    proc = run_main(cls_test, "classification_test", "--weights", weights, "--data-root", synth_root,
                    "--workers", "0", "--device", "cpu", "--output-dir", tmp_path / "report", check=False)
    assert_one_line_error(proc, "out of GPU memory in classification_test (evaluation, --batch-size 64); run "
                                "the same command with --batch-size 32")
    assert not (tmp_path / "report" / "results.json").exists()
