"""Classification/longtail.py against hand-computed values; cRT; test.py's post-hoc flags;
benchmarks/long_tail.py."""
import csv
import json
import math
import os
import pathlib

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from benchmarks import chain_runner, long_tail_plan
from Classification import longtail
from common.samplers import ClassBalancedSampler
from conftest import assert_one_line_error, run_main, run_script

TINY = ["--model", "resnet18", "--weights", "none", "--img-size", "32", "--batch-size", "16",
        "--workers", "0", "--device", "cpu"]


# ------------------------------------------------------------------------------------- losses, by hand

def test_effective_number_weights_by_hand():
    # beta 0.5: n=1 -> 0.5/0.5 = 1; n=3 -> 0.5/(1-0.125) = 4/7; normalised to sum 2: 2*7/11, 2*4/11
    w = longtail.effective_number_weights([1, 3], 0.5)
    assert torch.allclose(w, torch.tensor([14 / 11, 8 / 11]))
    # beta -> 0: every class weighs the same; beta 0.9999 with small counts: close to inverse frequency
    assert torch.allclose(longtail.effective_number_weights([5, 50], 0.0), torch.tensor([1.0, 1.0]))
    w = longtail.effective_number_weights([10, 100], 0.9999)
    assert abs(w[0] / w[1] - 10) < 0.05 and abs(float(w.sum()) - 2) < 1e-6


def test_class_balanced_ce_by_hand():
    logits, y = torch.zeros(2, 2), torch.tensor([0, 1])
    w = torch.tensor([14 / 11, 8 / 11])
    # each sample's CE is ln 2; the batch mean of w_y * CE = (14/11 + 8/11) / 2 * ln 2 = ln 2
    assert math.isclose(float(longtail.weighted_ce(logits, y, w)), math.log(2), rel_tol=1e-6)
    assert math.isclose(float(longtail.weighted_ce(logits[:1], y[:1], w)), 14 / 11 * math.log(2),
                        rel_tol=1e-6)
    loss, _ = longtail.EpochLoss("cb", [1, 3], epoch=0, beta=0.5)(nn.Identity(), logits[:1], y[:1])
    assert math.isclose(float(loss), 14 / 11 * math.log(2), rel_tol=1e-6)


def test_balanced_softmax_by_hand():
    # prior [1/4, 3/4]: logits 0 + log prior -> p(class 0) = 1/4, so CE = ln 4; class 1: ln(4/3)
    logits = torch.zeros(2, 2)
    assert math.isclose(float(longtail.balanced_softmax_loss(logits[:1], torch.tensor([0]), [1, 3])),
                        math.log(4), rel_tol=1e-6)
    assert math.isclose(float(longtail.balanced_softmax_loss(logits[:1], torch.tensor([1]), [1, 3])),
                        math.log(4 / 3), rel_tol=1e-6)


def test_ldam_margins_and_loss_by_hand():
    # 1 / n^(1/4) for n = 1, 16: 1 and 1/2; scaled so that the largest is 0.5
    m = longtail.ldam_margins([1, 16], 0.5)
    assert torch.allclose(m, torch.tensor([0.5, 0.25]))
    logits = torch.tensor([[0.5, 0.0]])
    # true class 0: z = [0.5 - 0.5, 0] -> CE of [0, 0] = ln 2 (any scale)
    assert math.isclose(float(longtail.ldam_loss(logits, torch.tensor([0]), m, 2.0)), math.log(2),
                        rel_tol=1e-6)
    # true class 1: z = [0.5, -0.25], s = 2 -> [1, -0.5]; CE = log(1 + e^1.5)
    assert math.isclose(float(longtail.ldam_loss(logits, torch.tensor([1]), m, 2.0)),
                        math.log(1 + math.exp(1.5)), rel_tol=1e-6)


def test_drw_switches_to_class_balanced_weights():
    assert longtail.default_drw_epoch("ldam", 200, None) == 160  # the paper's 160 of 200
    assert longtail.default_drw_epoch("ldam", 6, None) == 4
    assert longtail.default_drw_epoch("ce", 200, None) is None
    assert longtail.default_drw_epoch("ldam", 200, -1) is None
    before = longtail.EpochLoss("ldam", [1, 16], epoch=3, drw_epoch=4)
    after = longtail.EpochLoss("ldam", [1, 16], epoch=4, drw_epoch=4)
    assert before.weights is None
    assert torch.allclose(after.weights, longtail.effective_number_weights([1, 16], 0.9999))
    logits, y = torch.tensor([[0.5, 0.0]]), torch.tensor([1])
    loss, _ = after(nn.Identity(), logits, y)
    # one sample: the weighted mean w l / w is its loss; the batch rule (this repository's earlier one) gives
    # w l
    expected = math.log(1 + math.exp(30 * 0.75))  # s=30 on z = [0.5, -0.25]
    assert math.isclose(float(loss), expected, rel_tol=1e-5)
    old = longtail.EpochLoss("ldam", [1, 16], epoch=4, drw_epoch=4, drw_normalise="batch")
    assert math.isclose(float(old(nn.Identity(), logits, y)[0]), float(after.weights[1]) * expected,
                        rel_tol=1e-5)


def test_drw_loss_is_the_weighted_mean_by_hand():
    """DRW as the reference's F.cross_entropy(weight=w): sum_i w_yi l_i / sum_i w_yi."""
    logits, y = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1, 1])
    a, b, c = math.log(1 + math.exp(-1)), math.log(2), math.log(1 + math.exp(-2))  # each sample's CE
    w = longtail.effective_number_weights([1, 3], 0.5)  # [14/11, 8/11]
    loss, _ = longtail.EpochLoss("ce", [1, 3], epoch=2, beta=0.5, drw_epoch=2)(nn.Identity(), logits, y)
    assert math.isclose(float(loss), (14 * a + 8 * b + 8 * c) / (14 + 8 + 8), rel_tol=1e-6)
    assert math.isclose(float(loss), float(nn.functional.cross_entropy(logits, y, weight=w)), rel_tol=1e-6)
    old, _ = longtail.EpochLoss("ce", [1, 3], epoch=2, beta=0.5, drw_epoch=2, drw_normalise="batch")(
        nn.Identity(), logits, y)
    assert math.isclose(float(old), (14 / 11 * a + 8 / 11 * b + 8 / 11 * c) / 3, rel_tol=1e-6)
    # before the switch epoch: the plain mean
    plain, _ = longtail.EpochLoss("ce", [1, 3], epoch=1, beta=0.5, drw_epoch=2)(nn.Identity(), logits, y)
    assert math.isclose(float(plain), (a + b + c) / 3, rel_tol=1e-6)


def test_drw_with_balanced_softmax_changes_the_loss_from_the_switch_epoch():
    # prior [1/4, 3/4]: zero logits + log prior -> class 0: ln 4, class 1: ln(4/3)
    logits, y = torch.zeros(2, 2), torch.tensor([0, 1])
    losses = [float(longtail.EpochLoss("balanced_softmax", [1, 3], epoch=e, beta=0.5, drw_epoch=1)(
        nn.Identity(), logits, y)[0]) for e in (0, 1)]
    assert math.isclose(losses[0], (math.log(4) + math.log(4 / 3)) / 2, rel_tol=1e-6)
    assert math.isclose(losses[1], (14 * math.log(4) + 8 * math.log(4 / 3)) / 22, rel_tol=1e-6)


def test_cosine_classifier_export_keeps_predictions():
    torch.manual_seed(0)
    model = nn.Module()
    model.fc = longtail.CosineLinear(5, 3)
    x = torch.randn(20, 5) * 3
    cos = model.fc(x)
    assert cos.abs().max() <= 1 + 1e-6
    before = cos.argmax(1)
    longtail.plain_linear_equivalent(model)
    assert type(model.fc) is nn.Linear and torch.equal(model.fc(x).argmax(1), before)


def test_logit_adjustment_by_hand():
    # prior [3/4, 1/4], tau 1: [1, 0] - log prior = [1 - ln 0.75, ln 4] = [1.2877, 1.3863]: the prediction
    # flips
    model = longtail.LogitAdjusted(nn.Identity(), [3, 1], tau=1.0)
    out = model(torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(out, torch.tensor([[1 - math.log(0.75), math.log(4)]]), atol=1e-6)
    assert out.argmax(1).item() == 1
    # tau 0 leaves the logits as they are
    assert torch.allclose(longtail.LogitAdjusted(nn.Identity(), [3, 1], 0.0)(torch.tensor([[1.0, 0.0]])),
                          torch.tensor([[1.0, 0.0]]))


def test_tau_normalisation_by_hand():
    fc = nn.Linear(2, 2)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
        fc.bias.fill_(1.0)
    longtail.tau_normalize_(fc, 0.5)  # norms 5 and 2: divided by sqrt(5), sqrt(2)
    assert torch.allclose(fc.weight, torch.tensor([[3 / 5 ** 0.5, 4 / 5 ** 0.5], [0.0, 2 / 2 ** 0.5]]))
    assert torch.equal(fc.bias, torch.zeros(2))
    longtail.tau_normalize_(fc, 1.0)
    assert torch.allclose(fc.weight.norm(dim=1), torch.ones(2))
    # tau up to 2, as the reference sweeps it: unit rows stay unit; norms 5 and 2 -> 1/5 and 1/2
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
    longtail.tau_normalize_(fc, 2.0)
    assert torch.allclose(fc.weight.norm(dim=1), torch.tensor([0.2, 0.5]))
    with pytest.raises(longtail.UserError, match=r"--tau-norm must be in \[0, 2\], got 2.5"):
        longtail.tau_normalize_(fc, 2.5)


# ------------------------------------------------------------------------------------------------- sampler

def test_class_balanced_sampler_frequencies_and_ddp_shards():
    targets = [0] * 90 + [1] * 9 + [2] * 1
    s = ClassBalancedSampler(targets, seed=0, num_samples=30000)
    freq = np.bincount(np.asarray(targets)[list(s)], minlength=3) / 30000
    assert np.abs(freq - 1 / 3).max() < 0.015
    assert len(s) == 30000
    # within class 0, every image is drawn about equally often (90 images, ~111 draws each)
    per_image = np.bincount([i for i in s if i < 90], minlength=90)
    assert per_image.min() > 60 and per_image.max() < 170
    # two ranks: same global sequence, disjoint interleaved shares of equal length
    r0 = ClassBalancedSampler(targets, seed=0, rank=0, world_size=2)
    r1 = ClassBalancedSampler(targets, seed=0, rank=1, world_size=2)
    full = ClassBalancedSampler(targets, seed=0).draws()
    assert len(r0) == len(r1) == 50 and list(r0) == full[0::2].tolist() and list(r1) == full[1::2].tolist()
    first = list(r0)
    r0.set_epoch(1)
    assert list(r0) != first


def test_class_balanced_sampler_draws_the_pinned_indices():
    """Its draws for a seed and epoch, unchanged since it lived in Classification/longtail.py (the re-sampling
    results of docs/results.md were drawn so); CDTG's --class-balanced batches are its draws too."""
    targets = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 0, 1, 0, 0]
    s = ClassBalancedSampler(targets, seed=5)
    s.set_epoch(2)
    assert s.draws().tolist() == [11, 0, 10, 7, 4, 10, 10, 9, 6, 15, 10, 7, 11, 4, 11, 3]
    rank1 = ClassBalancedSampler(targets, seed=5, rank=1, world_size=2)
    assert list(rank1) == [11, 11, 10, 13, 4, 6, 7, 0]


# ---------------------------------------------------------------------------- scripts: LDAM, post hoc, cRT

@pytest.mark.slow
def test_ldam_export_loads_in_test_py_and_crt_freezes_backbone(synth_root, tmp_path):
    run = tmp_path / "ldam"
    run_script("Classification/train.py", "--data-root", synth_root, "--output-dir", str(run), *TINY,
               "--epochs", "1", "--loss", "ldam", "--sampler", "class_balanced")
    res = json.loads((run / "results.json").read_text())
    run_script("Classification/test.py", "--weights", str(run / "model_final.pt"), "--data-root", synth_root,
               "--workers", "0", "--device", "cpu", "--output-dir", str(tmp_path / "eval"))
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert again["confusion_matrix"] == res["confusion_matrix"]
    # post hoc, default folder named after the adjustment, next to the weights
    proc = run_script("Classification/test.py", "--weights", str(run / "model_final.pt"), "--data-root",
                      synth_root, "--workers", "0", "--device", "cpu", "--logit-adjust", "1", "--tau-norm",
                      "0.5")
    assert (run / "test" / "SYNTH_taunorm0.5_la1" / "results.json").is_file(), proc.stdout[-500:]
    # tau tuned on a held-out list: the best of the grid by mean per-class accuracy, named in the folder
    held_out = tmp_path / "held_out.txt"
    train_lines = pathlib.Path(synth_root, "anno", "SYNTH_train.txt").read_text().splitlines(keepends=True)
    held_out.write_text("".join(train_lines[::3]))
    proc = run_script("Classification/test.py", "--weights", str(run / "model_final.pt"), "--data-root",
                      synth_root, "--workers", "0", "--device", "cpu", "--logit-adjust", "1", "--tune-list",
                      str(held_out), "--tau-grid", "0", "1", "2")
    line = next(ln for ln in proc.stdout.splitlines() if "tuned on" in ln)
    scores = {float(t): float(v)
              for t, v in (p.split(": ") for p in line.split("(mean per-class accuracy ")[1]
                                                      .rstrip(")").split(", "))}
    best = max(scores, key=scores.get)
    assert f"tau {best:g} " in line and (run / "test" / f"SYNTH_la{best:g}" / "results.json").is_file()
    proc = run_script("Classification/test.py", "--weights", str(run / "model_final.pt"), "--data-root",
                      synth_root, "--tune-list", str(held_out), check=False)
    assert_one_line_error(proc, "give exactly one of --logit-adjust, --tau-norm")

    a = torch.load(run / "model_final.pt")["model"]
    for bn in ("frozen", "train"):
        crt = tmp_path / f"crt_{bn}"
        run_script("Classification/crt.py", "--weights", str(run / "model_final.pt"), "--data-root",
                   synth_root, "--output-dir", str(crt), "--epochs", "1", "--batch-size", "16", "--workers",
                   "0", "--device", "cpu", "--bn", bn)
        b = torch.load(crt / "model_final.pt")["model"]
        weights = [k for k in a if not k.startswith("fc.") and not k.endswith(("running_mean", "running_var",
                                                                                "num_batches_tracked"))]
        stats = [k for k in a if k.endswith("running_mean")]
        assert weights and all(torch.equal(a[k], b[k]) for k in weights)  # no gradient reaches the backbone
        # frozen: BN running statistics kept; train (the reference's model.train()): updated
        assert all(torch.equal(a[k], b[k]) for k in stats) == (bn == "frozen")
        assert not torch.equal(a["fc.weight"], b["fc.weight"])
        assert (crt / "results.json").is_file() and (crt / "args.yaml").is_file()
    args = yaml.safe_load((crt / "args.yaml").read_text())
    # the reference
    assert (args["optimizer"], args["schedule"], args["weight_decay"]) == ("sgd", "cosine", 5e-4)


def test_frozen_backbone_trains_only_fc():
    from torchvision.models import resnet18

    from Classification.crt import FrozenBackbone
    net = FrozenBackbone(resnet18(num_classes=3)).train()
    assert not net.model.bn1.training and net.model.fc.training
    assert {n for n, p in net.named_parameters() if p.requires_grad} == {"model.fc.weight", "model.fc.bias"}
    net = FrozenBackbone(resnet18(num_classes=3), bn="train").train()
    assert net.model.bn1.training and not net.eval().model.bn1.training
    assert {n for n, p in net.named_parameters() if p.requires_grad} == {"model.fc.weight", "model.fc.bias"}


def test_sgd_and_cosine_schedule():
    from types import SimpleNamespace

    from common.training import make_optimizer
    model = nn.Linear(2, 2)
    args = SimpleNamespace(optimizer="sgd", momentum=0.9, lr=0.1, weight_decay=5e-4, schedule="cosine",
                           epochs=4, lr_drop_epochs=[], lr_gamma=0.1)
    opt, sched = make_optimizer(model, args)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # 0.1 * (1 + cos(pi e / 4)) / 2 for e = 0..3
    assert np.allclose(lrs, [0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])
    args.optimizer, args.schedule, args.lr_drop_epochs = "adam", "step", [2]
    opt, sched = make_optimizer(model, args)
    assert isinstance(opt, torch.optim.Adam)


def test_long_tail_flag_errors(synth_root, tmp_path):
    from Classification import test as classification_test
    from Classification import train as classification_train
    proc = run_main(classification_train, "classification", "--data-root", synth_root, "--output-dir",
                    tmp_path / "r", *TINY, "--loss", "cb", "--cb-beta", "1", check=False)
    assert_one_line_error(proc, "--cb-beta must be in [0, 1)")
    assert not (tmp_path / "r").exists()
    proc = run_main(classification_train, "classification", "--data-root", synth_root, "--output-dir",
                    tmp_path / "r", *TINY, "--loss", "cb", "--drw-epoch", "1", check=False)
    assert_one_line_error(proc, "--drw-epoch defers the class-balanced weights that --loss cb applies")
    assert not (tmp_path / "r").exists()
    proc = run_main(classification_test, "classification_test", "--weights", tmp_path / "none.pt",
                    "--data-root", synth_root, "--tau-norm", "2", check=False)
    assert_one_line_error(proc, "none.pt does not exist")


# ------------------------------------------------------------------------------------------------ driver

def tiny_config(tmp_path, root, epochs: int = 1) -> str:
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(f"""classification:
  data_root: {root}
  model: resnet18
  weights: none
  img_size: 32
  batch_size: 16
  epochs: {epochs}
  lr_drop_epochs: [1]
  workers: 0
  device: cpu
classification_test:
  workers: 0
  device: cpu
""")
    return str(cfg)


@pytest.mark.slow
def test_driver_two_seeds_two_methods_and_resume(synth_root, tmp_path):
    out = tmp_path / "bench"
    args = ["benchmarks/long_tail.py", "--config", tiny_config(tmp_path, synth_root), "--methods", "ce",
            "logit_adjust", "--seeds", "0", "1", "--parts", "longtail", "--output-dir", str(out), "--jobs",
            "2", "--protocols", "adam"]
    proc = run_script(*args)
    table = (out / "results.md").read_text()
    assert "| ce | 2 |" in table and "| logit_adjust | 2 |" in table and "| logit_adjust − ce | 2 |" in table
    assert "| many |" not in table.replace(" | many | ", "")  # the tiny set has no class with > 100 images
    assert "few" in table and "±" in table
    rows = list(csv.DictReader((out / "runs.csv").read_text().splitlines()))
    assert sorted((r["method"], r["seed"]) for r in rows) == [("ce", "0"), ("ce", "1"), ("logit_adjust", "0"),
                                                              ("logit_adjust", "1")]
    for r in rows:
        assert os.path.isfile(os.path.join(r["folder"], "results.json"))
        assert 0 <= float(r["oa"]) <= 1
    assert os.path.isfile(os.path.join(rows[0]["folder"], "args.yaml"))
    assert (out / "long_tail_groups.png").stat().st_size > 1000
    # the post-hoc row is the CE model of the same seed with the adjustment: its own evaluation
    ce0 = json.loads((out / "longtail" / "adam" / "ce" / "seed0" / "results.json").read_text())
    la0 = json.loads((out / "longtail" / "adam" / "logit_adjust" / "seed0" / "results.json").read_text())
    assert sum(map(sum, la0["confusion_matrix"])) == sum(map(sum, ce0["confusion_matrix"]))
    # again: nothing is re-run (the model files keep their times), the same table comes out
    stamp = os.path.getmtime(out / "longtail" / "adam" / "ce" / "seed0" / "model_final.pt")
    proc = run_script(*args)
    assert "4 finished runs found; not redone" in proc.stdout + proc.stderr
    assert os.path.getmtime(out / "longtail" / "adam" / "ce" / "seed0" / "model_final.pt") == stamp
    assert (out / "results.md").read_text() == table


def test_driver_kmdn_and_dsva_tables_from_finished_runs(synth_root, tmp_path):
    """--report-only over finished KMDN and DSVA runs (their result files written here by hand)."""
    out = tmp_path / "bench"
    for seed, (tail_d, tail_0) in enumerate(((0.8, 0.6), (0.7, 0.6))):
        for name, tail in (("distill", tail_d), ("distill_alpha0", tail_0)):
            f = out / "kmdn" / f"seed{seed}" / name
            f.mkdir(parents=True)
            part = {"oa": tail, "macro_f1": tail}
            (f / "summary.json").write_text(json.dumps({"before": {"head": part,
                                                                   "tail": {"oa": 0.5, "macro_f1": 0.5}},
                                                        "after": {"head": part, "tail": part}}))
        d = out / "dsva" / f"seed{seed}"
        (d / "dsva").mkdir(parents=True)
        fig = {"zsl": 0.5 + 0.1 * seed, "u": 0.4, "s": 0.6, "h": 0.48}
        last = {**fig, "epoch": 3 + seed, "gamma": -0.1 * seed}
        (d / "dsva" / "results.json").write_text(json.dumps({"last": last, "best_test": fig}))
        (d / "clip_report.json").write_text(json.dumps({"zero_shot": {"name": {
            "unseen_among_unseen": 0.4, "unseen_among_all": 0.2, "seen_among_all": 0.8}}}))
    proc = run_script("benchmarks/long_tail.py", "--data-root", synth_root, "--parts", "kmdn", "dsva",
                      "--seeds", "0", "1", "--output-dir", str(out), "--report-only")
    table = (out / "results.md").read_text()
    assert "| tail model accuracy | 2 | 50.0 ± 0.0 | 60.0 ± 0.0 | 75.0 ± 7.1 | +15.0 ± 7.1 |" in table, table
    assert ("| DSVA, last epoch (epochs and gamma chosen on validation classes) | 2 | 55.0 ± 7.1 | "
            "40.0 ± 0.0 |" in table)
    assert ("| plain CLIP zero-shot, same CLIPs (no calibration) | 2 | 40.0 ± 0.0 | 20.0 ± 0.0 | "
            "80.0 ± 0.0 | 32.0 ± 0.0 |" in table)
    assert "| 1 | 5 | -0.1 | 60.0 | 40.0 | 60.0 | 48.0 |" in table, table  # per seed: epochs, gamma, figures
    assert "report:" in proc.stdout


def test_driver_errors(synth_root, tmp_path):
    proc = run_script("benchmarks/long_tail.py", "--data-root", synth_root, "--methods", "ce", "tgn",
                      "--parts", "longtail", "--output-dir", str(tmp_path / "b"), check=False)
    assert_one_line_error(proc, "tgn needs the tgn part", "--tgn-list")
    proc = run_script("benchmarks/long_tail.py", "--data-root", synth_root, "--tgn-list",
                      str(tmp_path / "x.txt"), "--output-dir", str(tmp_path / "b"), check=False)
    assert_one_line_error(proc, "x.txt does not exist")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"benchmark:\n  data_root: {synth_root}\n  methods: [ce, focal]\n")
    proc = run_script("benchmarks/long_tail.py", "--config", str(cfg), "--output-dir", str(tmp_path / "b"),
                      check=False)
    assert_one_line_error(proc, str(cfg), "key 'methods'", "invalid choice: 'focal'")
    assert not (tmp_path / "b").exists()


def long_tail_module():
    import importlib.util

    from conftest import REPO
    spec = importlib.util.spec_from_file_location("long_tail",
                                                  os.path.join(REPO, "benchmarks", "long_tail.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_driver_tgn_part_wiring(synth_root, tmp_path):
    """The tgn part: one CDTG on the first seed's distilled tail model, then a TGN classifier per seed on its
    list."""
    lt = long_tail_module()
    args = lt.get_args_parser().parse_args(["--data-root", synth_root, "--seeds", "3", "4", "--output-dir",
                                            str(tmp_path)])
    args.methods = [*long_tail_plan.DEFAULT_METHODS, "tgn"]
    plan = long_tail_plan.tgn_plan(args, 3, synth_root)
    train, generate, expand = plan.cdtg
    tail = os.path.join(str(tmp_path), "kmdn", "seed3", "distill", "tail_model.pt")
    assert train.cmd[train.cmd.index("--tail-model") + 1] == tail
    ce = os.path.join(str(tmp_path), "longtail", "adam", "ce", "seed3")
    # quality tracked on CE's model
    assert train.needs == (plan.clip[0].marker, os.path.join(ce, "results.json"))
    assert train.cmd[train.cmd.index("--eval-classifier") + 1] == os.path.join(ce, "model_final.pt")
    assert generate.fresh and expand.marker == plan.train_list
    assert plan.evaluate.needs == (plan.train_list, os.path.join(ce, "results.json"))
    chain = long_tail_plan.kmdn_chain(args, 3, synth_root, then=plan.cdtg)[0]
    assert [j.label for j in chain] == ["kmdn head seed 3", "kmdn tail seed 3", "kmdn distill seed 3",
                                        "cdtg train", "cdtg generate", "cdtg expand",
                                        "kmdn distill_alpha0 seed 3"]
    job = long_tail_plan.tgn_job(args, 4, synth_root, plan.train_list, produced=True)
    assert job.needs == (plan.train_list,) and job.cmd.count("--train-list") == 2
    assert job.cmd[job.cmd.index("--output-dir") + 1] == os.path.join(str(tmp_path), "longtail", "adam",
                                                                      "tgn", "seed4")


def test_driver_tgn_resample_has_the_expanded_list_and_the_balanced_sampler(synth_root, tmp_path):
    """TGN + class-balanced sampler: the classifier on the original and the generated list, drawn
    class-balanced; plain tgn keeps the shuffle."""
    lt = long_tail_module()
    args = lt.get_args_parser().parse_args(["--data-root", synth_root, "--seeds", "3",
                                            "--output-dir", str(tmp_path)])
    job = long_tail_plan.tgn_job(args, 3, synth_root, "gen.txt", produced=True, method="tgn_resample")
    lists = [job.cmd[i + 1] for i, a in enumerate(job.cmd) if a == "--train-list"]
    assert lists == [os.path.join(synth_root, "anno", "SYNTH_train.txt"), "gen.txt"]
    assert job.cmd[job.cmd.index("--sampler") + 1] == "class_balanced"
    assert job.needs == ("gen.txt",) and job.extra["method"] == "tgn_resample"
    assert job.cmd[job.cmd.index("--output-dir") + 1] == os.path.join(str(tmp_path), "longtail", "adam",
                                                                      "tgn_resample", "seed3")
    assert "--sampler" not in long_tail_plan.tgn_job(args, 3, synth_root, "gen.txt", produced=True).cmd
    proc = run_script("benchmarks/long_tail.py", "--data-root", synth_root, "--methods", "ce", "tgn_resample",
                      "--parts", "longtail", "--output-dir", str(tmp_path / "b"), check=False)
    assert_one_line_error(proc, "tgn_resample needs the tgn part", "--tgn-list")


def test_runner_waits_for_needs_and_skips_after_a_failure(tmp_path):
    """A run waits for the runs it needs (in other chains); one whose need failed is skipped, not started; a
    `fresh` run's partial folder is removed before it starts."""
    import sys

    def job(name, code, needs=(), fresh=False):
        folder = tmp_path / name
        return chain_runner.Job(name, [sys.executable, "-c", code], str(folder), str(folder / "done"), 1,
                                resumable=False, needs=tuple(str(tmp_path / n / "done") for n in needs),
                                fresh=fresh)

    write = ("import os, time; time.sleep({t}); os.makedirs({d!r}, exist_ok=True); "
             "seen = str(os.listdir({d!r})); open(os.path.join({d!r}, 'done'), 'w').write(seen)")
    (tmp_path / "late").mkdir()
    (tmp_path / "late" / "partial").write_text("left by an interrupted run")
    chains = [[job("late", write.format(t=0, d=str(tmp_path / "late")), needs=["early"], fresh=True)],
              [job("early", write.format(t=0.5, d=str(tmp_path / "early")))],
              [job("broken", "raise SystemExit(3)")],
              [job("after_broken", write.format(t=0, d=str(tmp_path / "after_broken")), needs=["broken"])]]
    runner = chain_runner.Runner(chains, jobs=2, threads=1)
    runner.run()
    assert (tmp_path / "early" / "done").is_file()
    assert (tmp_path / "late" / "done").read_text() == "[]"  # started after early, in a fresh folder
    assert sorted(label for label, _ in runner.failed) == ["after_broken", "broken"]
    assert not (tmp_path / "after_broken").exists()


def test_runner_starts_a_chain_as_soon_as_its_need_exists(tmp_path):
    """With one worker, a chain that needs another's output runs right after it, before the chains listed
    after it; a first chain that cannot start yet does not hold the worker."""
    import sys
    order = tmp_path / "order.txt"

    def job(name, needs=()):
        folder = tmp_path / name
        code = (f"import os; os.makedirs({str(folder)!r}, exist_ok=True); open({str(order)!r}, "
                f"'a').write({name!r} + ' '); open(os.path.join({str(folder)!r}, 'done'), 'w').write('')")
        return chain_runner.Job(name, [sys.executable, "-c", code], str(folder), str(folder / "done"), 1,
                                resumable=False, needs=tuple(str(tmp_path / n / "done") for n in needs))

    chains = [[job("uses_list", needs=["makes_list"])], [job("makes_list")], [job("other")], [job("last")]]
    runner = chain_runner.Runner(chains, jobs=1, threads=1)
    runner.run()
    assert order.read_text().split() == ["makes_list", "uses_list", "other", "last"]
    assert runner.failed == []


def test_runner_runs_at_most_jobs_at_once_and_never_redoes_a_finished_run(tmp_path, monkeypatch):
    """--jobs 2: two runs at a time, never three; a worker freed by a run that ended takes the first chain
    whose need now exists (before a chain listed after it); a run whose marker exists is not started again.
    No clock: each run blocks until the test ends it, and the test looks at what runs each time the runner
    has started everything it would start and waits for a run to end."""
    import queue
    import subprocess
    import threading
    import types

    names = ["finished", "b", "uses_b", "c", "d", "e"]
    started = {n: threading.Event() for n in names}
    release = {n: threading.Event() for n in names}
    lock, running, most, calls = threading.Lock(), set(), [0], []

    def fake_run(cmd, **kwargs):
        name = cmd[-1]
        with lock:
            running.add(name)
            calls.append(name)
            most[0] = max(most[0], len(running))
        started[name].set()
        release[name].wait(60)
        with lock:
            running.discard(name)
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "done").write_text("")
        return subprocess.CompletedProcess(cmd, 0)

    states, real_wait = queue.Queue(), chain_runner.wait

    def waits(futures, **kwargs):
        # the runner has started all it would: once those runs are inside fake_run, the test sees them
        labels = frozenset(h.chain[h.pos].label for h in runner.held if h.future is not None)
        for label in labels:
            started[label].wait(60)
        states.put(labels)
        return real_wait(futures, **kwargs)

    fake_subprocess = types.SimpleNamespace(run=fake_run, STDOUT=subprocess.STDOUT)
    monkeypatch.setattr(chain_runner, "subprocess", fake_subprocess)
    monkeypatch.setattr(chain_runner, "wait", waits)

    def job(name, needs=()):
        folder = tmp_path / name
        return chain_runner.Job(name, ["run", name], str(folder), str(folder / "done"), 1, resumable=False,
                                needs=tuple(str(tmp_path / n / "done") for n in needs))

    finished = job("finished")
    os.makedirs(os.path.dirname(finished.marker))
    pathlib.Path(finished.marker).write_text("")
    chains = [[job("uses_b", needs=["b"])], [finished, job("b")], [job("c")], [job("d")], [job("e")]]
    runner = chain_runner.Runner(chains, jobs=2, threads=1)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    seen = [frozenset()]

    def next_state():
        """What runs at the runner's next wait that differs from the last one seen (a wait that timed out
        sees the same runs again)."""
        while True:
            try:
                state = states.get(timeout=60)
            except queue.Empty:
                pytest.fail(f"the runner did not wait again; running: {sorted(seen[-1])}")
            if state != seen[-1]:
                seen.append(state)
                return set(state)

    try:
        # b and c first (uses_b cannot start yet); when b ends, uses_b (listed first, its need now made)
        # goes before d and e, while c still runs
        assert next_state() == {"b", "c"}
        release["b"].set()
        assert next_state() == {"c", "uses_b"}
        release["c"].set()
        assert next_state() == {"uses_b", "d"}
        release["uses_b"].set()
        assert next_state() == {"d", "e"}
        release["d"].set()
        assert next_state() == {"e"}
        release["e"].set()
    finally:
        # the runner ends while the fakes are still in place, also after a failed assertion
        for event in release.values():
            event.set()
        thread.join(60)
    assert not thread.is_alive()
    assert runner.failed == []
    assert most[0] == 2
    assert sorted(calls) == ["b", "c", "d", "e", "uses_b"]  # "finished" did not run again


def rotated_test_list(root: str, out) -> str:
    """The test list with every label moved to the next class: any score read from it changes."""
    names = json.loads(pathlib.Path(root, "classes.json").read_text())["names"]
    lines = []
    for line in pathlib.Path(root, "anno", "SYNTH_test.txt").read_text().splitlines():
        path, label = line.split()
        lines.append(f"{path} {(int(label) + 1) % len(names)}\n")
    out.write_text("".join(lines))
    return str(out)


@pytest.mark.slow
def test_tuned_settings_never_read_the_test_list(synth_root, tmp_path):
    """post-hoc tau and cRT epochs chosen with --tune-list: the same choice and the same validation scores
    whether the test list is right or has every label wrong (which changes every test figure)."""
    run = tmp_path / "ce"
    run_script("Classification/train.py", "--data-root", synth_root, "--output-dir", str(run), *TINY,
               "--epochs", "1")
    held_out = tmp_path / "held_out.txt"
    train_lines = pathlib.Path(synth_root, "anno", "SYNTH_train.txt").read_text().splitlines(keepends=True)
    held_out.write_text("".join(train_lines[::3]))
    wrong = rotated_test_list(synth_root, tmp_path / "wrong_test.txt")
    common = ["--data-root", synth_root, "--workers", "0", "--device", "cpu", "--tune-list", str(held_out)]
    tuned, oa = {}, {}
    for name, test_list in (("right", None), ("wrong", wrong)):
        t = ["--test-list", test_list] if test_list else []
        for flag in ("--logit-adjust", "--tau-norm"):
            out = tmp_path / f"{flag[2:]}_{name}"
            run_script("Classification/test.py", "--weights", str(run / "model_final.pt"), *common, flag, "1",
                       "--tau-grid", "0", "0.5", "1", "2", "--output-dir", str(out), *t)
            tuned[flag, name] = json.loads((out / "tuned.json").read_text())
            oa[flag, name] = json.loads((out / "results.json").read_text())["oa"]
        out = tmp_path / f"crt_{name}"
        run_script("Classification/crt.py", "--weights", str(run / "model_final.pt"), *common, "--epochs",
                   "3", "--batch-size", "16", "--output-dir", str(out), "--seed", "0", *t)
        tuned["crt", name] = json.loads((out / "tuned.json").read_text())
        oa["crt", name] = json.loads((out / "results.json").read_text())["oa"]
    for key in ("--logit-adjust", "--tau-norm", "crt"):
        right, wrong_ = dict(tuned[key, "right"]), dict(tuned[key, "wrong"])
        assert right == wrong_, key
        assert oa[key, "right"] != oa[key, "wrong"]  # the test list itself was read for the test figures
    assert len(tuned["crt", "right"]["tune_mean_acc"]) == 3 and 1 <= tuned["crt", "right"]["epochs"] <= 3


def test_driver_validation_list_and_drw_tuning_wiring(synth_root, tmp_path):
    """The benchmark carves a validation list from the training list; LDAM-DRW's candidates are tested on it,
    never on the test list, and the per-seed runs get the candidate best on it."""
    lt = long_tail_module()
    cfg = tiny_config(tmp_path, synth_root, epochs=4)
    args = lt.get_args_parser().parse_args(["--config", cfg, "--data-root", synth_root, "--seeds", "0", "1",
                                            "--output-dir", str(tmp_path / "b"), "--parts", "longtail"])
    args.methods = ["ce", "ldam_drw", "crt", "tau_norm"]
    from common.holdout import carve_lists
    from common.layout import read_list
    args.lt_train_list, args.val_list = carve_lists(os.path.join(synth_root, "anno", "SYNTH_train.txt"),
                                                    os.path.join(synth_root, "train"),
                                                    str(tmp_path / "lists"))
    train, val = read_list(args.lt_train_list), read_list(args.val_list)
    full = read_list(os.path.join(synth_root, "anno", "SYNTH_train.txt"))
    assert len(train) + len(val) == len(full) and not {p for p, _ in train} & {p for p, _ in val}
    assert {y for _, y in val} == {y for _, y in full}  # every class has validation images
    tuning = long_tail_plan.drw_tuning_chain(args, synth_root, "sgd")
    assert long_tail_plan.drw_candidates(args) == [1, 2, 3]  # 0.25, 0.5 and 0.8 (the reference's) of 4 epochs
    test_list = os.path.join(synth_root, "anno", "SYNTH_test.txt")
    for j in tuning:
        assert j.cmd[j.cmd.index("--test-list") + 1] == args.val_list and test_list not in j.cmd
        assert "--optimizer" in j.cmd and j.cmd[j.cmd.index("--train-list") + 1] == args.lt_train_list
    chains = long_tail_plan.longtail_chains(args, 1, synth_root, "sgd")
    for job in (j for c in chains for j in c if j.extra["method"] in ("crt", "tau_norm")):
        assert job.cmd[job.cmd.index("--tune-list") + 1] == args.val_list and test_list not in job.cmd
    # hand-written candidate results: the best mean per-class accuracy on validation wins
    epochs = long_tail_plan.drw_candidates(args)
    for k, acc in zip(epochs, ([0.2, 0.9], [0.6, 0.6], [0.9, 0.1])):  # mean 0.55, 0.6, 0.5
        f = tmp_path / "b" / "longtail" / "sgd" / "tune" / "ldam_drw" / f"drw{k}"
        f.mkdir(parents=True)
        (f / "results.json").write_text(json.dumps({"per_class_acc": acc}))
    ldam = next(j for c in chains for j in c if j.extra["method"] == "ldam_drw")
    assert ldam.needs == tuple(j.marker for j in tuning)
    cmd = ldam.cmd()
    assert cmd[-2:] == ["--drw-epoch", "2"]
    tuned = json.loads((tmp_path / "b" / "longtail" / "sgd" / "tune" / "ldam_drw.json").read_text())
    assert tuned["drw_epoch"] == 2


@pytest.mark.slow
def test_crt_epoch_choice_survives_resume(synth_root, tmp_path):
    """cRT with --tune-list interrupted after 2 of 3 epochs and resumed: the same choice and scores as the run
    that was not interrupted."""
    run = tmp_path / "ce"
    run_script("Classification/train.py", "--data-root", synth_root, "--output-dir", str(run), *TINY,
               "--epochs", "1")
    held_out = tmp_path / "held_out.txt"
    train_lines = pathlib.Path(synth_root, "anno", "SYNTH_train.txt").read_text().splitlines(keepends=True)
    held_out.write_text("".join(train_lines[::3]))
    common = ["Classification/crt.py", "--weights", str(run / "model_final.pt"), "--data-root", synth_root,
              "--workers", "0", "--device", "cpu", "--tune-list", str(held_out), "--epochs", "3",
              "--batch-size", "16", "--seed", "0"]
    run_script(*common, "--output-dir", str(tmp_path / "whole"))
    run_script(*common, "--output-dir", str(tmp_path / "cut"), "--stop-after", "2")
    assert not (tmp_path / "cut" / "tuned.json").exists()
    run_script(*common, "--output-dir", str(tmp_path / "cut"), "--resume")
    whole = json.loads((tmp_path / "whole" / "tuned.json").read_text())
    assert json.loads((tmp_path / "cut" / "tuned.json").read_text()) == {**whole, "tune_list": str(held_out)}
    assert len(whole["tune_mean_acc"]) == 3
