"""KMDN: feature ResNet, weight loading, the distillation loss and schedule, stage-1/distill runs, hand-over
file."""
import json
import math
import os

import pytest
import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

from benchmarks import kmdn_feature_gap
from common.backbones import build_feature_resnet
from common.distributed import setup
from common.engine import train_one_epoch
from common.errors import UserError
from common.part_model import load_part_model, part_meta, save_part_model
from conftest import assert_one_line_error, run_script, script_args
from KMDN import distill, test, train
from KMDN.model import DistillLoss, distill_lr, feature_mse, normalised_mse, phase, similarity_mse, step_lr

TRAIN = ["--model", "resnet18", "--weights", "none", "--img-size", "32", "--batch-size", "16",
         "--workers", "0", "--device", "cpu", "--epochs", "2", "--save-every", "1"]
DISTILL = ["--batch-size", "16", "--workers", "0", "--device", "cpu", "--epochs", "4", "--interval", "2"]


def metrics(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def read_split(root):
    with open(os.path.join(root, "split.json")) as f:
        return json.load(f)


def call(module, stage, argv):
    """Run a KMDN script's main in this process (saves the interpreter start of a subprocess)."""
    module.main(script_args(module, stage, argv))


def run_main(module, stage, argv, capsys):
    """call() that must fail: returns (exit code, stderr)."""
    with pytest.raises(SystemExit) as e:
        call(module, stage, argv)
    return e.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def stage1(synth_root, tmp_path_factory):
    """runs/kmdn/<name>-like folder with trained head/ and tail/ stage-1 runs (2 epochs each)."""
    base = tmp_path_factory.mktemp("kmdn")
    for part in ("head", "tail"):
        call(train, "kmdn_train",
             ["--part", part, "--data-root", synth_root, "--output-dir", base / part, *TRAIN])
    return base


@pytest.fixture(scope="module")
def distilled(stage1, synth_root):
    call(distill, "kmdn_distill", ["--data-root", synth_root, "--output-dir", stage1 / "distill", *DISTILL])
    return stage1 / "distill"


# --- model ---

@pytest.mark.slow
def test_layer3_feature_shape():
    with torch.no_grad():
        r50 = build_feature_resnet("resnet50", 7, "none", verbose=False).eval()
        for size in (224, 256):
            logits, feat = r50(torch.zeros(1, 3, size, size))
            assert logits.shape == (1, 7) and feat.shape == (1, 1024, size // 16, size // 16)
        logits, feat = build_feature_resnet("resnet18", 3, "none", verbose=False).eval()(torch.zeros(2, 3,
                                                                                                     224,
                                                                                                     224))
        assert logits.shape == (2, 3) and feat.shape == (2, 256, 14, 14)
    assert r50.feature_channels == 1024


@pytest.mark.slow
def test_torchvision_weights_load_into_every_layer(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet50()
    with torch.no_grad():  # values no fresh model could have, BN and projection shortcuts included
        for t in tv.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5)
    sd = tv.state_dict()
    torch.save(sd, tmp_path / "r50.pth")
    full = build_feature_resnet("resnet50", 1000, str(tmp_path / "r50.pth"), verbose=False).state_dict()
    assert full.keys() == sd.keys()
    assert all(torch.equal(full[k], sd[k]) for k in sd)
    own = build_feature_resnet("resnet50", 8, str(tmp_path / "r50.pth"), verbose=False).state_dict()
    assert [k for k in sd if not torch.equal(own[k], sd[k])] == ["fc.weight", "fc.bias"]  # fc: 8 classes
    upstream = build_feature_resnet("resnet50", 8, str(tmp_path / "r50.pth"), upstream_shortcut_init=True,
                                    verbose=False).state_dict()
    differ = {k.rsplit(".", 2)[0] for k in sd if not k.startswith("fc.")
              and not torch.equal(upstream[k], sd[k])}
    assert differ == {f"layer{i}.0.downsample" for i in (1, 2, 3, 4)}


def test_unknown_arch_is_a_user_error():
    with pytest.raises(UserError, match="resnet50"):
        build_feature_resnet("vgg16", 3, "none")


# --- distillation loss and schedule ---

class Fixed(torch.nn.Module):
    def __init__(self, logits, feat):
        super().__init__()
        self.logits, self.feat = logits, feat

    def forward(self, x):
        return self.logits, self.feat


def test_distillation_term_on_hand_made_example():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    fs = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 4.0]]]])  # [2, 1, 1, 2]
    ft = torch.tensor([[[[0.0, 0.0]]], [[[1.0, 4.0]]]])
    ce = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    mse = (1 + 4 + 4 + 0) / 4
    assert feature_mse(fs, ft).item() == pytest.approx(mse)
    loss_fn = DistillLoss(Fixed(None, ft), alpha=0.2)
    loss, out = loss_fn(Fixed(logits, fs), torch.zeros(2), y)
    assert loss.item() == pytest.approx(ce + 0.2 * mse, rel=1e-6)
    assert out is logits
    assert loss_fn.terms() == pytest.approx({"ce": ce, "feat_mse": mse})


def test_normalised_and_similarity_losses_on_hand_made_examples():
    fs = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 4.0]]]])  # [2, 1, 1, 2]
    ft = torch.tensor([[[[2.0, 4.0]]], [[[4.0, -3.0]]]])
    # sample 1: same direction, twice the scale -> 0; sample 2: orthogonal -> 2 (1 - 0) = 2; mean 1
    assert normalised_mse(fs, ft).item() == pytest.approx(1.0)
    assert feature_mse(fs, ft).item() == pytest.approx((1 + 4 + 1 + 49) / 4)
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).view(2, 2, 1, 1)  # image cosine 1/sqrt(2)
    b = torch.tensor([[0.0, 3.0], [2.0, 0.0]]).view(2, 2, 1, 1)  # image cosine 0
    assert similarity_mse(a, b).item() == pytest.approx(2 * 0.5 / 4)


def test_feature_loss_flag_changes_the_loss_and_only_the_plain_mse_sees_scale_and_channel_order():
    torch.manual_seed(0)
    fs, ft = torch.rand(4, 6, 2, 2), torch.rand(4, 6, 2, 2)
    shuffled = 3 * ft[:, torch.randperm(6)]  # the same teacher, 3x the scale, channels in another order
    assert similarity_mse(fs, shuffled).item() == pytest.approx(similarity_mse(fs, ft).item(), rel=1e-5)
    assert normalised_mse(fs, 3 * ft).item() == pytest.approx(normalised_mse(fs, ft).item(), rel=1e-5)
    assert feature_mse(fs, 3 * ft).item() != pytest.approx(feature_mse(fs, ft).item(), rel=1e-2)
    logits, y = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])
    losses = {}
    for kind, f in (("mse", feature_mse), ("normalised", normalised_mse), ("similarity", similarity_mse)):
        loss, _ = DistillLoss(Fixed(None, ft), 0.5, kind)(Fixed(logits, fs), torch.zeros(4), y)
        assert loss.item() == pytest.approx(math.log(2) + 0.5 * f(fs, ft).item(), rel=1e-6)
        losses[kind] = loss.item()
    assert len({round(v, 6) for v in losses.values()}) == 3


def test_nearest_class_mean_accuracy_on_hand_made_features():
    f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.9, 0.2]])
    # cosine to the unit class means (.997, .055), (.626, .780): the last is class 0
    y = torch.tensor([0, 0, 1, 1])
    assert kmdn_feature_gap.nearest_class_mean_accuracy(f, y) == pytest.approx(0.75)


def test_phase_schedule_and_lr():
    assert [phase(e, 50)[0] for e in (0, 49, 50, 99)] == ["head", "head", "tail", "tail"]
    assert phase(0, 50) == ("head", "tail") and phase(50, 50) == ("tail", "head")
    assert [phase(e, 2)[0] for e in range(6)] == ["head", "head", "tail", "tail", "head", "head"]
    lrs = [step_lr(e, 1e-3, [31, 61, 91], 0.1) for e in (0, 30, 31, 60, 61, 90, 91, 99)]
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5, 1e-6, 1e-6])
    # upstream counts from the global epoch; --lr-per-phase restarts the schedule with each phase
    assert [distill_lr(e, 50, 1e-3, [31, 61, 91], 0.1, False) for e in (0, 50, 99)] == pytest.approx(
        [1e-3, 1e-4, 1e-6])
    assert [distill_lr(e, 2, 1e-3, [1], 0.1, True) for e in range(4)] == pytest.approx([1e-3, 1e-4, 1e-3,
                                                                                        1e-4])
    assert [distill_lr(e, 2, 1e-3, [3], 0.1, False) for e in range(4)] == pytest.approx([1e-3, 1e-3, 1e-3,
                                                                                         1e-4])


@pytest.mark.slow
def test_teacher_is_bit_identical_after_a_distillation_epoch():
    torch.manual_seed(0)
    student = build_feature_resnet("resnet18", 3, "none", verbose=False)
    teacher = build_feature_resnet("resnet18", 5, "none", verbose=False).train()  # DistillLoss freezes it
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    graph = []
    teacher.layer3.register_forward_hook(lambda m, i, o: graph.append(o.requires_grad))
    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,)))
    opt = torch.optim.Adam(student.parameters(), lr=1e-3)
    train_one_epoch(student, DataLoader(data, batch_size=4), opt, setup("cpu"),
                    loss_fn=DistillLoss(teacher, 0.2))
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert all(p.grad is None for p in teacher.parameters())
    assert graph == [False, False]
    assert not all(torch.equal(student_before[k], v) for k, v in student.state_dict().items())


def test_part_model_file_round_trip(tmp_path, synth_root):
    split = read_split(synth_root)
    model = build_feature_resnet("resnet18", len(split["tail"]), "none", verbose=False).eval()
    meta = part_meta(model, "resnet18", "tail", split, 32, "half")
    save_part_model(model, str(tmp_path / "tail_model.pt"), meta)
    loaded, got = load_part_model(str(tmp_path / "tail_model.pt"))
    assert not loaded.training and "model" not in got
    assert got["classes"] == split["tail"] and got["names"] == [split["names"][c] for c in split["tail"]]
    assert got["feature_channels"] == 256 and got["num_classes"] == len(split["tail"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        (a, fa), (b, fb) = model(x), loaded(x)
    assert torch.equal(a, b) and torch.equal(fa, fb)
    with pytest.raises(UserError, match="does not exist"):
        load_part_model(str(tmp_path / "nothing.pt"))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(UserError, match="could not be read"):
        load_part_model(str(tmp_path / "junk.pt"))
    torch.save({"model": model.state_dict()}, tmp_path / "bare.pt")
    with pytest.raises(UserError, match="not a KMDN part model"):
        load_part_model(str(tmp_path / "bare.pt"))


# --- the scripts on the tiny embedded set ---

@pytest.mark.slow
def test_stage1_runs(stage1, synth_root):
    split = read_split(synth_root)
    for part in ("head", "tail"):
        rows = metrics(stage1 / part)
        assert [r["epoch"] for r in rows] == [0, 1]
        assert all(len(r["test_per_class_acc"]) == len(split[part]) and "test_macro_f1" in r for r in rows)
        _, meta = load_part_model(str(stage1 / part / "model_final.pt"))
        assert meta["part"] == part and meta["classes"] == split[part] and meta["img_size"] == 32
        assert (stage1 / part / "model_epoch_0.pt").is_file()


@pytest.mark.slow
def test_distill_run_and_exported_tail_model(distilled, stage1, synth_root, tmp_path, capsys):
    rows = metrics(distilled)
    assert [(r["student"], r["teacher"]) for r in rows] == [("head", "tail")] * 2 + [("tail", "head")] * 2
    assert rows[1]["train_loss"] < rows[0]["train_loss"] and rows[3]["train_loss"] < rows[2]["train_loss"]
    assert all(r["train_loss"] == pytest.approx(r["train_ce"] + 0.2 * r["train_feat_mse"], rel=1e-6)
               for r in rows)
    summary = json.loads((distilled / "summary.json").read_text())
    assert set(summary["before"]) == set(summary["after"]) == {"head", "tail"}
    assert summary["head_init"].endswith(os.path.join("head", "model_final.pt")) and summary["fresh_fc"]
    assert (summary["alpha"], summary["feature_loss"]) == (0.2, "mse")
    assert "| tail (resnet18) |" in (distilled / "summary.md").read_text()
    # the exported tail model alone reproduces the tail model's reported test results
    capsys.readouterr()
    call(test, "kmdn_test",
         ["--weights", distilled / "head_model.pt", distilled / "tail_model.pt", "--data-root",
          synth_root, "--workers", "0", "--device", "cpu", "--output-dir", tmp_path])
    again = json.loads((tmp_path / "tail_model" / "results.json").read_text())
    distilled_tail = json.loads((distilled / "tail" / "results.json").read_text())
    assert again["confusion_matrix"] == distilled_tail["confusion_matrix"]
    assert "are disjoint" in capsys.readouterr().out


@pytest.mark.slow
def test_distill_resume_is_exact_and_teacher_phase_leaves_head_unchanged(distilled, stage1, synth_root):
    part = stage1 / "distill_part"
    args = ["--data-root", synth_root, "--output-dir", part, "--head-init",
            stage1 / "head" / "model_final.pt", "--tail-init", stage1 / "tail" / "model_final.pt", *DISTILL]
    call(distill, "kmdn_distill", [*args, "--stop-after", "3"])
    head_after_phase1 = torch.load(part / "ckpt_last.pt", weights_only=False)["models"]["head"]
    call(distill, "kmdn_distill", [*args, "--resume"])
    for name in ("head_model.pt", "tail_model.pt"):
        a, b = torch.load(distilled / name)["model"], torch.load(part / name)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), name
    final_head = torch.load(part / "head_model.pt")["model"]
    assert all(torch.equal(head_after_phase1[k], final_head[k]) for k in final_head)
    assert [r["train_loss"] for r in metrics(distilled)] == [r["train_loss"] for r in metrics(part)]


@pytest.mark.slow
def test_bad_inputs(stage1, synth_root, tmp_path, capsys):
    split = read_split(synth_root)
    bad = dict(split, train_counts=[c + 1 for c in split["train_counts"]])
    (tmp_path / "split.json").write_text(json.dumps(bad))
    code, err = run_main(train, "kmdn_train", ["--part", "head", "--data-root", synth_root, "--split",
                                               str(tmp_path / "split.json"), *TRAIN], capsys)
    assert code == 2 and "does not match the data root" in err
    # a stage-1 file of the wrong part: checked in a subprocess for the exact one-line error
    proc = run_script("KMDN/distill.py", "--data-root", synth_root, "--output-dir", str(tmp_path / "d1"),
                      "--head-init", str(stage1 / "tail" / "model_final.pt"), *DISTILL, check=False)
    assert_one_line_error(proc, "--head-init", "holds a tail model")
    # the right part with the wrong class count
    wrong = dict(split, tail=split["tail"][:-1])
    model = build_feature_resnet("resnet18", len(wrong["tail"]), "none", verbose=False)
    save_part_model(model, str(tmp_path / "tail3.pt"),
                    part_meta(model, "resnet18", "tail", wrong, 32, "half"))
    code, err = run_main(distill, "kmdn_distill",
                         ["--data-root", synth_root, "--output-dir", str(tmp_path / "d2"),
                          "--head-init", str(stage1 / "head" / "model_final.pt"),
                          "--tail-init", str(tmp_path / "tail3.pt"), *DISTILL], capsys)
    assert code == 2 and "--tail-init" in err and f"{len(split['tail']) - 1} tail classes" in err
    code, err = run_main(distill, "kmdn_distill", ["--data-root", synth_root, "--output-dir",
                                                   str(tmp_path / "nowhere" / "distill"), *DISTILL], capsys)
    assert code == 2 and "run KMDN/train.py --part head first" in err
    assert not (tmp_path / "d1").exists() and not (tmp_path / "d2").exists()
    overlap = dict(split, tail=split["tail"] + split["head"][:1])
    (tmp_path / "overlap.json").write_text(json.dumps(overlap))
    code, err = run_main(test, "kmdn_test",
                         ["--weights", str(stage1 / "head" / "model_final.pt"), "--data-root",
                          synth_root, "--split", str(tmp_path / "overlap.json")], capsys)
    assert code == 2 and "in both head and tail" in err


@pytest.mark.slow
def test_feature_gap_script(distilled, stage1, synth_root):
    """benchmarks/kmdn_feature_gap.py: a model against itself has MSE 0 and cosine 1; the distilled head
    model's accuracy is the distillation run's."""
    head = str(stage1 / "head" / "model_final.pt")
    proc = run_script("benchmarks/kmdn_feature_gap.py", "--data-root", synth_root, "--reference", head,
                      "--models", f"self={head}", f"tail={stage1 / 'tail' / 'model_final.pt'}",
                      f"distilled={distilled / 'head_model.pt'}")
    rows = {line.split(" | ")[0][2:]: line.strip("| \n").split(" | ")[1:] for line in proc.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| model")}
    assert rows["self"][1:3] == ["0.000", "1.000"] and rows["reference"][1:3] == ["0.000", "1.000"]
    assert rows["self"][4] == "0.0000" and float(rows["tail"][4]) > 0  # similarity MSE
    # nearest class mean
    assert rows["self"][5] == rows["reference"][5] and 0 <= float(rows["tail"][5]) <= 100
    assert float(rows["tail"][1]) > 0 and rows["tail"][3] == "-"  # other classes: no accuracy
    after = json.loads((distilled / "summary.json").read_text())["after"]["head"]["oa"]
    assert float(rows["distilled"][3]) == pytest.approx(100 * after, abs=0.05)
    proc = run_script("benchmarks/kmdn_feature_gap.py", "--data-root", synth_root, "--reference", head,
                      "--models", "nofile", check=False)
    assert_one_line_error(proc, "--models takes NAME=FILE, got 'nofile'")
