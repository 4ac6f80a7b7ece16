"""CDTG training: losses against hand computations, augmentation, conditioning, one step per mode (what
changes and what stays frozen), the CLIP path with a tiny random open_clip model, and train.py end to end:
outputs, exact resume, an unconditional checkpoint via --ckpt, and input errors."""
import copy
import json
import os
import pathlib
from types import SimpleNamespace

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from CDTG import batches, losses
from CDTG import train as cdtg_train
from CDTG.augment import AdaptiveAugment, augment, translate
from CDTG.conditioning import FeatureProjection, TailClassifier, fused_latents, load_tail_model
from CDTG.conv_shortcuts import CentreTapConv2d, PatchConv2d
from CDTG.model import Discriminator, Generator
from CDTG.sampling import generate_class, real_images_by_class
from CDTG.tracking import QualityTracker
from CDTG.trainer import CDTGTrainer, StepConfig, paired_forward
from common.backbones import build_classifier, build_feature_resnet
from common.checkpoint import export_weights
from common.clip import checkpoint_dict, encode_text_prompts, load_clip, register_model_config
from common.distributed import setup
from common.errors import UserError
from common.layout import read_classes
from common.part_model import part_meta, save_part_model
from common.samplers import ClassBalancedSampler
from conftest import assert_one_line_error, call_main, free_port, run_main, run_script

TINY = ["--size", "32", "--style-dim", "16", "--n-mlp", "1", "--max-channels", "8", "--label-dim", "8",
        "--batch-size", "4", "--workers", "0", "--lambda-clip", "0", "--log-every", "1",
        "--sample-every", "2", "--ckpt-every", "2", "--sample-cols", "2", "--device", "cpu"]
CLIP_NAME = "cdtg-test-clip"
CLIP_CFG = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def split(synth_root):
    with open(os.path.join(synth_root, "split.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def tail_model_file(synth_root, split, tmp_path_factory):
    """A KMDN tail-model file (random resnet18 at 32 px) in KMDN's own hand-over format."""
    torch.manual_seed(0)
    model = build_feature_resnet("resnet18", len(split["tail"]), "none", verbose=False)
    path = str(tmp_path_factory.mktemp("kmdn") / "tail_model.pt")
    save_part_model(model, path, part_meta(model, "resnet18", "tail", split, 32, "half"))
    return path


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    torch.manual_seed(0)
    register_model_config(CLIP_NAME, CLIP_CFG)
    model = open_clip.create_model(CLIP_NAME)
    path = str(tmp_path_factory.mktemp("clip") / "tiny_clip.pt")
    torch.save(checkpoint_dict(model, CLIP_NAME, CLIP_CFG), path)
    return path


@pytest.fixture(scope="module")
def classifier_file(synth_root, tmp_path_factory):
    """An independent classifier over every class (random resnet18 at 32 px) as Classification/train.py
    exports it."""
    names = read_classes(synth_root)["names"]
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("cls") / "model_final.pt")
    export_weights(build_classifier("resnet18", len(names), "none", verbose=False), path, arch="resnet18",
                   names=names, img_size=32, norm="half", dataset="SYNTH")
    return path


def run_train(synth_root, tail_model_file, out, *extra):
    argv = ["--data-root", synth_root, "--tail-model", tail_model_file, "--output-dir", str(out), *TINY,
            *extra]
    return call_main(cdtg_train, "cdtg_train", *argv)


# ------------------------------------------------------------------------------------------------ losses


def test_adversarial_losses_by_hand():
    real, fake = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [-1.0]])
    sp = lambda v: torch.log1p(torch.exp(torch.tensor(v)))
    want_d = (sp(0.0) + sp(-2.0)) / 2 + (sp(1.0) + sp(-1.0)) / 2
    torch.testing.assert_close(losses.d_logistic_loss(real, fake), want_d)
    torch.testing.assert_close(losses.g_nonsaturating_loss(fake), (sp(-1.0) + sp(1.0)) / 2)


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm():
    w = torch.randn(3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    pred = (x * w).flatten(1).sum(1, keepdim=True)
    torch.testing.assert_close(losses.r1_penalty(pred, x), w.pow(2).sum())


def test_path_length_of_a_linear_generator():
    # image = A w for each of n_latent copies: J^T y has norm |A^T y|; with A = c*I the length is c*|y| ~ c
    torch.manual_seed(0)
    latents = torch.randn(64, 2, 3 * 16 * 16, requires_grad=True)
    image = 3.0 * latents.sum(1).view(64, 3, 16, 16)
    penalty, new_mean, lengths = losses.path_length_penalty(image, latents, torch.tensor(0.0), decay=1.0)
    # J^T y = 3 y for each copy, y ~ N(0, I/(H W)) of 3 H W dims: length = 3 |y| ~ 3 sqrt(3)
    assert lengths.mean().item() == pytest.approx(3.0 * 3 ** 0.5, rel=0.05)
    # decay 1: the mean jumps to the batch mean
    assert new_mean.item() == pytest.approx(lengths.mean().item())
    torch.testing.assert_close(penalty, (lengths - new_mean).pow(2).mean())


def test_consistency_losses_are_cross_entropy_on_logits():
    img = F.normalize(torch.randn(4, 8), dim=-1)
    txt = F.normalize(torch.randn(3, 8), dim=-1)
    y = torch.tensor([0, 2, 1, 1])
    want = F.cross_entropy(100 * img @ txt.t(), y)
    torch.testing.assert_close(losses.clip_consistency_loss(img, txt, y, 100.0), want)
    logits = torch.randn(4, 3)
    torch.testing.assert_close(losses.classifier_consistency_loss(logits, y), F.cross_entropy(logits, y))


# ----------------------------------------------------------------------------------------------- augmentation


def test_augment_p0_is_identity_and_translation_shifts():
    x = torch.randn(2, 3, 8, 8)
    assert augment(x, 0.0) is x
    torch.manual_seed(0)
    one = torch.zeros(1, 1, 8, 8)
    one[0, 0, 4, 4] = 1
    shifted = translate(one, ratio=0.25)
    assert shifted.sum() == 1 and shifted.shape == one.shape  # the pixel moved by at most 2 but was not lost
    (r, c) = torch.nonzero(shifted[0, 0])[0].tolist()
    assert abs(r - 4) <= 2 and abs(c - 4) <= 2


def test_augment_is_differentiable_and_ada_moves_p():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    augment(x, 1.0).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    ada = AdaptiveAugment(target=0.6, length=100, every=1)
    ada.observe(torch.ones(10, 1))  # D sure of every real image: overfitting, p goes up by 10 / 100
    ada.step()
    assert ada.p == pytest.approx(0.1)
    ada.observe(-torch.ones(10, 1))
    ada.step()
    assert ada.p == pytest.approx(0.0)
    fixed = AdaptiveAugment(fixed_p=0.3)
    fixed.observe(torch.ones(3, 1))
    fixed.step()
    assert fixed.p == 0.3
    state = ada.state_dict()
    other = AdaptiveAugment()
    other.load_state_dict(state)
    assert other.p == ada.p and other.calls == ada.calls


# ----------------------------------------------------------------------------------------------- conditioning


def test_projection_pooling_and_fusion():
    p_full = FeatureProjection((8, 4, 4), 16, pool=0)
    p_pool = FeatureProjection((8, 4, 4), 16, pool=2)
    assert p_full.linear.in_features == 128 and p_pool.linear.in_features == 32
    feat = torch.randn(3, 8, 4, 4)
    reduced = p_pool.reduce(feat)
    torch.testing.assert_close(p_pool(reduced), p_pool(feat))  # pooled maps (a cache) give the same P
    with pytest.raises(ValueError):
        p_full(torch.randn(3, 8, 2, 2))
    proj = p_pool(feat)
    only_feature = fused_latents(proj, 0.0, 0.9)
    assert len(only_feature) == 2 and all(torch.equal(z, proj) for z in only_feature)
    assert len(fused_latents(proj, 0.8, 0.0)) == 1
    assert len(fused_latents(proj, 0.8, 0.0, "probabilistic")) == 1
    torch.manual_seed(0)
    a, b = fused_latents(proj, 1.0, 0.9)
    assert not torch.equal(a, b)  # two independent noises


def test_tail_classifier_stays_frozen_in_eval_mode():
    model = build_feature_resnet("resnet18", 3, "none", verbose=False)
    tail = TailClassifier(model, {"img_size": 32, "norm": "half"})
    tail.train()
    assert not tail.model.training and not any(p.requires_grad for p in tail.parameters())
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    logits, feat = tail(x)
    assert logits.shape == (2, 3) and feat.shape == (2, 256, 2, 2) and tail.feature_shape() == (256, 2, 2)
    logits.sum().backward()
    assert x.grad.abs().sum() > 0  # gradients reach the generator's images through the frozen model


# ------------------------------------------------------------------------------------------------ one step


def make_trainer(mode, lambda_cls=1.0, lambda_clip=0.0, clip=None, seed=0, **step_config):
    torch.manual_seed(seed)
    k = 3
    tail = TailClassifier(build_feature_resnet("resnet18", k, "none", verbose=False),
                          {"img_size": 32, "norm": "half"})
    g = Generator(32, 16, 1, num_classes=k, max_channels=8)
    d = Discriminator(32, num_classes=k, label_dim=8, max_channels=8)
    proj = FeatureProjection(tail.feature_shape(), 16, pool=1)
    text = None
    if clip is not None:
        text = encode_text_prompts(clip, ["a photo of a ship", "a photo of a bridge", "a photo of a dam"])
    cfg = StepConfig(mode=mode, lambda_cls=lambda_cls, lambda_clip=lambda_clip, d_reg_every=2, g_reg_every=2,
                     **step_config)
    return CDTGTrainer(g, d, proj, tail, setup("cpu"), cfg, clip, text)


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 3, 32, 32, generator=g) * 2 - 1, torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_one_step_updates_g_d_and_only_trainable_parts(mode):
    tr = make_trainer(mode)
    before = {name: snapshot(m) for name, m in
              (("g", tr.g), ("d", tr.d), ("P", tr.proj), ("tail", tr.tail), ("g_ema", tr.g_ema))}
    x, y = batch()
    log = tr.step(x, y, 0)  # iteration 0: R1 and path length run too
    assert {"d", "g", "adv", "cls", "r1", "path", "real_score", "fake_score"} <= set(log)
    assert all(torch.isfinite(v).all() for v in log.values())
    assert "label_emb.weight" in changed(before["g"], tr.g) and "style.1.weight" in changed(before["g"], tr.g)
    assert "fusion_conv.0.weight" in changed(before["d"], tr.d)
    assert changed(before["g_ema"], tr.g_ema)  # EMA follows G
    # frozen tail model; code: train mode, BN statistics move as released
    moved = changed(before["tail"], tr.tail)
    assert not moved if mode == "paper" else moved and all(
        k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in moved)
    assert changed(before["P"], tr.proj) if mode == "paper" else not changed(before["P"], tr.proj)
    assert mode == "code" or tr.proj.linear.weight.requires_grad
    assert tr.g_optim.param_groups[0]["lr"] == pytest.approx(0.002 * 2 / 3)  # lazy ratio k/(k+1), k = 2


def g_after_one_step(mode, lambda_cls, lambda_clip=0.0, clip=None):
    tr = make_trainer(mode, lambda_cls, lambda_clip, clip)
    x, y = batch()
    tr.step(x, y, 1)  # iteration 1: no regularisation step
    return snapshot(tr.g)


@pytest.mark.slow
def test_code_mode_trains_g_with_the_adversarial_loss_only():
    code = g_after_one_step("code", 1.0)
    adv_only = g_after_one_step("paper", 0.0)
    with_cls = g_after_one_step("paper", 1.0)
    # L_cls logged but not back-propagated (the modes' tail features differ: train vs eval BatchNorm)
    code_no_cls = g_after_one_step("code", 0.0)
    assert all(torch.equal(code[k], code_no_cls[k]) for k in code)
    # paper mode: L_cls changes G's update
    assert any(not torch.equal(with_cls[k], adv_only[k]) for k in code)


@pytest.mark.slow
def test_clip_loss_with_a_tiny_random_open_clip_model(clip_file):
    clip = load_clip(CLIP_NAME, clip_file)
    clip_before = snapshot(clip.model)
    tr = make_trainer("paper", 0.0, 1.0, clip)
    x, y = batch()
    log = tr.step(x, y, 1)
    assert torch.isfinite(log["clip"]) and log["clip"] > 0
    assert not changed(clip_before, clip.model) and not any(p.requires_grad for p in clip.model.parameters())
    with_clip = snapshot(tr.g)
    without = g_after_one_step("paper", 0.0)
    assert any(not torch.equal(with_clip[k], without[k]) for k in with_clip)  # the CLIP loss reaches G


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["paper", "code"])
def test_paper_mode_gives_the_frozen_judges_conv_shortcuts_and_code_mode_keeps_theirs(mode, clip_file):
    """Paper mode: the tail model's layer4 convolutions (1 x 1 maps at 32 px) and CLIP's patch embedding take
    CDTG.conv_shortcuts, the tail model runs channels-last, and its outputs stay those of the plain model;
    code mode, whose train-mode tail model is chaotic at batch 2, keeps every nn.Conv2d as it is."""
    clip = load_clip(CLIP_NAME, clip_file)
    plain = copy.deepcopy(make_trainer(mode).tail)
    tr = make_trainer(mode, 1.0, 1.0, clip)
    kinds = {type(m) for m in [*tr.tail.modules(), *clip.model.modules()]}
    fast = {CentreTapConv2d, PatchConv2d} <= kinds and tr.tail.channels_last
    assert fast == (mode == "paper")
    x = batch()[0]
    with torch.no_grad():
        torch.testing.assert_close(tr.tail(x)[0], plain(x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_clip_classes_all_adds_the_head_prompts_after_the_tail_ones(tail_model_file, clip_file, split):
    tail_ids = list(split["tail"])
    data = SimpleNamespace(split=split, tail_ids=tail_ids, names=[split["names"][c] for c in tail_ids])
    args = {"tail_input": "model", "size": 32, "tail_model": tail_model_file, "lambda_clip": 1.0,
            "clip_model": CLIP_NAME, "clip_pretrained": clip_file, "mode": "paper",
            "clip_prompt": "a photo of a {name}"}
    rt = setup("cpu")
    _, clip, tail_only = cdtg_train.load_conditioning(SimpleNamespace(**args, clip_classes="tail"), data, rt)
    _, _, every = cdtg_train.load_conditioning(SimpleNamespace(**args, clip_classes="all"), data, rt)
    head_ids = [c for c in range(len(split["names"])) if c not in tail_ids]
    assert head_ids and every.shape[0] == len(split["names"])
    torch.testing.assert_close(every[:len(tail_ids)], tail_only)  # label k is still prompt k
    head = encode_text_prompts(clip, [f"a photo of a {split['names'][c]}" for c in head_ids])
    torch.testing.assert_close(every[len(tail_ids):], head)


# ------------------------------------------------------------------------------------------------ train.py


def read_metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_train_writes_checkpoint_samples_and_generator(synth_root, tail_model_file, split, tmp_path):
    out = tmp_path / "run"
    run_train(synth_root, tail_model_file, out, "--iter", "4", "--feature-pool", "1")
    ck = torch.load(out / "ckpt_last.pt", weights_only=False)
    assert {"g", "d", "g_ema", "P", "P_ema", "g_optim", "d_optim", "iteration", "rng", "args",
            "meta"} <= set(ck)
    assert ck["iteration"] == 4
    meta = ck["meta"]
    assert meta["classes"] == split["tail"] and meta["names"] == [split["names"][c] for c in split["tail"]]
    assert meta["projection"]["pool"] == 1 and meta["r_train"] == 0.8 and meta["generator"]["size"] == 32
    final = torch.load(out / "generator.pt", weights_only=False)
    assert set(final) == {"g_ema", "P_ema", "meta"}
    assert sorted(os.listdir(out / "samples")) == ["000002.png", "000004.png"]
    from PIL import Image
    with Image.open(out / "samples" / "000004.png") as im:  # one row per tail class, --sample-cols columns
        assert im.size == (2 + 2 * 34, 2 + len(split["tail"]) * 34)
    assert [r["iter"] for r in read_metrics(out)] == [1, 2, 3, 4]
    assert not (out / "quality.png").exists()  # quality tracking is off by default


@pytest.mark.slow  # 7 s on the shared machine: three evaluations and three plots
def test_quality_tracking_logs_eval_rows_and_draws_quality_png(synth_root, tail_model_file, classifier_file,
                                                               tmp_path):
    out = tmp_path / "run"
    run_train(synth_root, tail_model_file, out, "--iter", "3", "--feature-pool", "1", "--eval-every", "2",
              "--eval-classifier", classifier_file, "--eval-per-class", "3", "--eval-max-real", "4")
    rows = [r for r in read_metrics(out) if "eval_fid" in r]
    assert [r["iter"] for r in rows] == [0, 2, 3]  # before training, every 2 iterations and after the last
    for r in rows:
        assert 0 <= r["eval_tail_model"] <= 1 and 0 <= r["eval_classifier"] <= 1
        assert r["eval_fid"] >= 0 and r["eval_pooled_fid"] >= 0 and r["eval_feature_diversity"] >= 0
    from PIL import Image
    with Image.open(out / "quality.png") as im:
        assert im.size[0] > 200


def tiny_tracking_models(synth_root, tail_model_file):
    """(split, runtime, tail model, G, P) for the tracking tests: tiny untrained G and P, eval mode."""
    split_ = json.loads(pathlib.Path(synth_root, "split.json").read_text())
    rt = setup("cpu")
    tail = load_tail_model(tail_model_file, rt.device)
    torch.manual_seed(0)
    g = Generator(32, 16, 1, num_classes=len(split_["tail"]), max_channels=8).eval()
    return split_, rt, tail, g, FeatureProjection(tail.feature_shape(), 16, 1).eval()


def test_quality_tracking_draws_what_generate_would_and_leaves_training_alone(synth_root, tail_model_file,
                                                                              classifier_file, tmp_path):
    split_, rt, tail, g, proj = tiny_tracking_models(synth_root, tail_model_file)
    reals = real_images_by_class(synth_root, {0: split_["tail"][0]}, 32)
    tracker = QualityTracker(reals, split_["tail"], tail, classifier_file, read_classes(synth_root)["names"],
                             rt, per_class=3, r=0.05, mixing=0.9, mixing_rule="always")
    seen = []
    measure = tracker.measurer.of_pixels
    tracker.measurer.of_pixels = lambda pixels, k: (seen.append(np.stack(pixels)), measure(pixels, k))[1]
    state = torch.get_rng_state()
    tracker.evaluate(g, proj)
    # training draws the same numbers with tracking on or off
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(0)  # generate.py: seeded once, then the classes in order
    want = []
    draw = SimpleNamespace(n_per_class=3, per_real=5, batch_size=64, seed=0, truncation=1.0, r=0.05, amp=True,
                           grid_cols=1)
    generate_class(0, reals[0], g, proj, tail, draw, rt, 0.9, "always", lambda i, p, s: want.append(p))
    assert np.array_equal(seen[0], np.stack(want))


@pytest.mark.slow  # 5 s on the loaded machine
def test_quality_tracking_measures_what_evaluate_py_measures(synth_root, tail_model_file, classifier_file,
                                                            tmp_path, monkeypatch):
    """One measurer: the images the tracker drew, saved losslessly as a generated folder, get from evaluate.py
    the very per-class figures (and pooled FID) the tracker logs, against the same first real images."""
    from PIL import Image

    from CDTG import evaluate
    from CDTG.manifest import MANIFEST_FORMAT, write_manifest
    split_, rt, tail, g, proj = tiny_tracking_models(synth_root, tail_model_file)
    labels = {0: split_["tail"][0], len(split_["tail"]) - 1: split_["tail"][-1]}
    reals, names = real_images_by_class(synth_root, labels, 32), read_classes(synth_root)["names"]
    tracker = QualityTracker(reals, split_["tail"], tail, classifier_file, names, rt, per_class=4, r=0.05,
                             mixing=0.9, mixing_rule="always", max_real=5)
    drawn = []
    measure = tracker.measurer.of_pixels
    tracker.measurer.of_pixels = lambda pixels, k: (drawn.append(pixels), measure(pixels, k))[1]
    rows, overall = tracker.measure(g, proj)
    folder = tmp_path / "gen"
    for (k, cid), pixels in zip(labels.items(), drawn):
        (folder / str(cid)).mkdir(parents=True)
        for i, p in enumerate(pixels):
            Image.fromarray(p).save(folder / str(cid) / f"{i:05d}.png")
    classes = [{"class_id": cid, "tail_label": k, "folder": str(cid), "count": 4}
               for k, cid in labels.items()]
    write_manifest(str(folder), {"format": MANIFEST_FORMAT, "data_root": synth_root, "checkpoint": None,
                                 "tail_model": tail_model_file, "r": 0.05, "size": 32, "clip": None,
                                 "classes": classes})
    monkeypatch.setattr(evaluate, "load_lpips", lambda net, device: (None, "unavailable: not in this test"))
    call_main(evaluate, "cdtg_evaluate", "--generated", folder, "--classifier", classifier_file,
              "--workers", "0", "--device", "cpu", "--max-per-class", "5", "--kid-subsets", "2")
    res = json.loads((folder / "quality.json").read_text())
    want_real = [min(5, split_["train_counts"][c]) for c in labels.values()]  # the last class has 4
    assert [c["n_real"] for c in res["per_class"]] == want_real
    for mine, theirs in zip(rows, res["per_class"]):
        assert {k: v for k, v in theirs.items() if k in mine} == mine
        assert {"fid", "feature_diversity", "real_feature_diversity", "classifier_consistency"} <= set(mine)
    assert overall["pooled_fid"] == res["overall"]["pooled_fid"] and overall["fid"] == res["overall"]["fid"]
    row = tracker.evaluate(g, proj)
    assert (row["eval_fid"], row["eval_classifier"]) == (overall["fid"], overall["classifier_consistency"])


def test_quality_tracking_needs_a_classifier(synth_root, tail_model_file, tmp_path):
    with pytest.raises(UserError, match="--eval-every needs --eval-classifier"):
        run_train(synth_root, tail_model_file, tmp_path / "run", "--iter", "2", "--eval-every", "1")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_code_mode_saves_the_fixed_projection_and_logs_clip(synth_root, tail_model_file, clip_file, tmp_path):
    out = tmp_path / "run"
    run_train(synth_root, tail_model_file, out, "--iter", "2", "--mode", "code", "--feature-pool", "1",
              "--lambda-clip", "1", "--clip-model", CLIP_NAME, "--clip-pretrained", clip_file,
              "--clip-prompt", "a photo of {article} {name}")
    assert all(r["clip"] > 0 and r["cls"] > 0 for r in read_metrics(out))  # logged, not back-propagated
    ck = torch.load(out / "ckpt_last.pt", weights_only=False)
    assert ck["meta"]["clip"] == {"model": CLIP_NAME, "pretrained": clip_file,
                                  "prompt": "a photo of {article} {name}", "classes": "tail"}
    torch.testing.assert_close(ck["P"]["linear.weight"], ck["P_ema"]["linear.weight"])
    final = torch.load(out / "generator.pt", weights_only=False)
    torch.testing.assert_close(final["P_ema"]["linear.weight"], ck["P"]["linear.weight"])


@pytest.mark.slow
@pytest.mark.parametrize("batches", [[], ["--class-balanced"],
                                     ["--class-groups", "--normalise-p", "--consistency-lowpass",
                                      "--consistency-every", "3", "--lambda-cls", "2"]],
                         ids=["instances", "class-balanced", "the-embedded-recipe"])
def test_resume_is_bit_identical(synth_root, tail_model_file, tmp_path, batches):
    extra = ["--iter", "4", "--d-reg-every", "2", "--g-reg-every", "3", "--hflip", "--augment",
             "--ada-every", "1", "--ada-length", "100", "--ada-target", "-1", *batches]
    full, part = tmp_path / "full", tmp_path / "part"
    run_train(synth_root, tail_model_file, full, *extra)
    run_train(synth_root, tail_model_file, part, *extra, "--stop-after", "2")
    assert not (part / "generator.pt").exists()
    run_train(synth_root, tail_model_file, part, *extra, "--resume")
    a = torch.load(full / "ckpt_last.pt", weights_only=False)
    b = torch.load(part / "ckpt_last.pt", weights_only=False)
    for key in ("g", "d", "g_ema", "P", "P_ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert a["augment"]["p"] == b["augment"]["p"] and a["augment"]["p"] > 0
    assert torch.equal(a["mean_path_length"], b["mean_path_length"])
    without_time = lambda rows: [{k: v for k, v in r.items() if k != "sec_per_iter"} for r in rows]
    assert without_time(read_metrics(full)) == without_time(read_metrics(part))


@pytest.mark.slow
def test_two_process_resume_equals_the_uninterrupted_run(synth_root, tail_model_file, tmp_path):
    """torchrun with 2 CPU processes: both start from rank 0's weights; stopped after iteration 2 and resumed,
    every process gets its own random stream back, so the run ends as the uninterrupted one (noise, mixing and
    path-length draws differ per rank)."""
    extra = ["--iter", "4", "--d-reg-every", "2", "--g-reg-every", "2", "--batch-size", "2"]

    def torchrun(out, *more):
        argv = ["--data-root", synth_root, "--tail-model", tail_model_file, "--output-dir", str(out), *TINY,
                *extra, *more]
        run_script("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                   "CDTG/train.py", *argv)

    full, part = tmp_path / "full", tmp_path / "part"
    torchrun(full)
    torchrun(part, "--stop-after", "2")
    assert len(torch.load(part / "ckpt_last.pt", weights_only=False)["rng"]) == 2  # each process's own state
    torchrun(part, "--resume")
    a = torch.load(full / "ckpt_last.pt", weights_only=False)
    b = torch.load(part / "ckpt_last.pt", weights_only=False)
    for key in ("g", "d", "g_ema", "P", "P_ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert torch.equal(a["mean_path_length"], b["mean_path_length"])


@pytest.mark.slow
def test_unconditional_swagan_checkpoint_via_ckpt(synth_root, tail_model_file, split, tmp_path):
    # an unconditional SWAGAN checkpoint: same layer names, without the class embeddings and D's fusion conv
    torch.manual_seed(5)
    g = Generator(32, 16, 1, num_classes=1, max_channels=8)
    d = Discriminator(32, num_classes=1, label_dim=8, max_channels=8)
    strip = lambda sd: {k: v for k, v in sd.items() if not k.startswith(("label_emb", "fusion_conv"))}
    path = tmp_path / "200000.pt"  # the file name must not set the iteration
    torch.save({"g": strip(g.state_dict()), "d": strip(d.state_dict()), "g_ema": strip(g.state_dict())}, path)
    out = tmp_path / "run"
    run_train(synth_root, tail_model_file, out, "--iter", "2", "--ckpt", str(path), "--lr", "0")
    ck = torch.load(out / "ckpt_last.pt", weights_only=False)
    assert ck["iteration"] == 2 and [r["iter"] for r in read_metrics(out)] == [1, 2]
    # lr 0: still the file's
    torch.testing.assert_close(ck["g"]["input.input"], g.state_dict()["input.input"])
    torch.testing.assert_close(ck["d"]["convs.0.conv1.0.weight"], d.state_dict()["convs.0.conv1.0.weight"])
    assert ck["g"]["label_emb.weight"].shape == (len(split["tail"]), 16)


def test_input_errors(synth_root, tail_model_file, tmp_path):
    with pytest.raises(UserError, match="tail-model is required"):
        call_main(cdtg_train, "cdtg_train", "--data-root", synth_root)
    head = tmp_path / "head.pt"
    ck = torch.load(tail_model_file, weights_only=False)
    torch.save({**ck, "classes": ck["classes"][::-1]}, head)
    with pytest.raises(UserError, match="split.json's tail part"):
        run_train(synth_root, str(head), tmp_path / "a", "--iter", "1")
    assert not (tmp_path / "a").exists()  # nothing written for a bad input
    run_train(synth_root, tail_model_file, tmp_path / "b", "--iter", "1")
    with pytest.raises(UserError, match=r"--resume with other settings .*--style-dim 32 \(the run has 16\)"):
        run_train(synth_root, tail_model_file, tmp_path / "b", "--iter", "2", "--resume", "--style-dim", "32")
    proc = run_main(cdtg_train, "cdtg_train", "--data-root", synth_root, "--tail-model",
                    tmp_path / "missing.pt", *TINY, check=False)
    assert_one_line_error(proc, "missing.pt", "does not exist")
    with pytest.raises(UserError, match="--reuse-fakes cannot be combined with --lambda-ms"):
        run_train(synth_root, tail_model_file, tmp_path / "c", "--iter", "1", "--reuse-fakes",
                  "--lambda-ms", "1")
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_command_line_error_is_one_line_and_exit_2(synth_root, tmp_path):
    proc = run_script("CDTG/train.py", "--data-root", synth_root, "--tail-model",
                      str(tmp_path / "missing.pt"), *TINY, check=False)
    assert_one_line_error(proc, "missing.pt", "does not exist")


def test_class_balanced_batches_even_out_the_classes_and_resume_exactly():
    labels = [0] * 90 + [1] * 9 + [2]
    sampler = batches.BalancedBatches(labels, 8, seed=3)
    drawn = [b for b, _ in zip(sampler, range(300))]
    counts = torch.bincount(torch.tensor([labels[i] for b in drawn for i in b]), minlength=3)
    assert (counts > 600).all()  # about 800 each; the shuffle would give class 2 about 24
    later = batches.BalancedBatches(labels, 8, seed=3, start=5)
    assert next(iter(later)) == drawn[5]


def test_batch_samplers_draw_the_pinned_batches():
    """The batches of a few seeds, ranks and start points as the samplers draw them: a resumed run of an older
    checkpoint sees the batches its first part would have (the shuffle and class groups as since they lived in
    train.py; the class-balanced batches since they are common.samplers' draws)."""
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 0, 1, 0, 0]

    def take(sampler, n):
        return [b for b, _ in zip(sampler, range(n))]

    assert take(batches.EndlessBatches(len(labels), 4, seed=5, start=2), 3) == \
        [[5, 10, 9, 13], [4, 11, 14, 7], [5, 1, 6, 8]]
    assert take(batches.EndlessBatches(len(labels), 3, seed=5, rank=1, world=2), 3) == \
        [[3, 1, 0], [10, 9, 13], [8, 7, 15]]
    # class-balanced: batch b is epoch b of common.samplers' sampler, B x world draws long (until 2026-12-04 a
    # torch multinomial of its own, whose batches were [[8, 11, 11, 4], [6, 3, 11, 11], [13, 0, 14, 9]] here)
    assert take(batches.BalancedBatches(labels, 4, seed=5, start=2), 3) == \
        [[11, 12, 9, 7], [11, 9, 6, 1], [10, 8, 15, 0]]
    assert take(batches.BalancedBatches(labels, 3, seed=5, rank=1, world=2), 2) == [[11, 11, 9], [11, 6, 9]]
    one = ClassBalancedSampler(labels, seed=5, rank=1, world_size=2, num_samples=6)
    one.set_epoch(1)
    assert list(one) == [11, 6, 9]
    assert take(batches.ClassGroupedBatches(labels, 8, seed=5, start=1), 2) == \
        [[8, 3, 7, 12, 6, 4, 13, 14], [4, 10, 3, 10, 12, 10, 1, 9]]


@pytest.mark.slow
def test_compiled_plain_passes_give_the_eager_step(monkeypatch):
    """StepConfig.compile compiles G and D for the unregularised passes only (R1 and path length differentiate
    twice, which torch.compile cannot); traced through AOTAutograd (the aot_eager backend, as inductor would
    be fed), two iterations (the first with both regularisers) equal the eager ones."""
    compiled, real_compile = [], torch.compile

    def compile_aot_eager(module, mode=None):
        compiled.append(type(module).__name__)
        return real_compile(module, backend="aot_eager")

    torch._dynamo.reset()
    logs = {}
    for setting in (None, "default"):
        if setting:
            monkeypatch.setattr(torch, "compile", compile_aot_eager)
        tr = make_trainer("paper", compile=setting)
        tr.draws.inject_index = lambda stage: 2  # one crossover point: one graph per module and grad mode
        x, y = batch()
        torch.manual_seed(5)
        logs[setting] = [tr.step(x, y, i) for i in range(2)]
        monkeypatch.undo()
    assert compiled == ["Generator", "Discriminator"]
    for eager, comp in zip(logs[None], logs["default"]):
        assert eager.keys() == comp.keys()
        for k in eager:
            torch.testing.assert_close(comp[k], eager[k], rtol=1e-4, atol=1e-5, msg=k)


def test_class_grouped_batches_put_one_class_in_each_stddev_group():
    labels = [0] * 40 + [1] * 5 + [2] * 2 + [3] * 9
    sampler = batches.ClassGroupedBatches(labels, 8, seed=1)
    assert (sampler.group, sampler.groups) == (4, 2)
    drawn = [b for b, _ in zip(sampler, range(200))]
    for b in drawn:
        classes = [labels[i] for i in b]
        # minibatch_stddev groups samples n, n + 2, n + 4, n + 6: each group one class, the two groups two
        # classes
        assert len({classes[n] for n in (0, 2, 4, 6)}) == 1 and len({classes[n] for n in (1, 3, 5, 7)}) == 1
        assert classes[0] != classes[1]
        if classes[0] in (0, 1, 3):  # classes with 4 images or more: no image twice in a group
            assert len({b[n] for n in (0, 2, 4, 6)}) == 4
    counts = torch.bincount(torch.tensor([labels[b[0]] for b in drawn] + [labels[b[1]] for b in drawn]))
    assert (counts > 70).all()  # uniform over the 4 classes: about 100 groups each
    assert next(iter(batches.ClassGroupedBatches(labels, 8, seed=1, start=7))) == drawn[7]
    assert batches.ClassGroupedBatches(labels, 6, seed=1).group == 3  # the largest divisor of B up to 4


def test_indexed_keeps_each_item_after_its_first_read_only_when_asked():
    reads = []

    class Base(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            reads.append(i)
            return torch.full((2,), float(i)), torch.tensor(i)

    kept = batches.Indexed(Base(), keep=True)
    first = [kept[i] for i in (2, 0, 2, 2, 0)]
    assert reads == [2, 0]
    assert [int(label) for _, label, _ in first] == [2, 0, 2, 2, 0]
    assert [i for *_, i in first] == [2, 0, 2, 2, 0]
    assert first[2][0] is first[0][0]
    reads.clear()
    plain = batches.Indexed(Base())
    assert [int(plain[i][1]) for i in (1, 1)] == [1, 1] and reads == [1, 1]


def test_batch_loader_keeps_images_only_in_process_and_when_they_fit(monkeypatch):
    dataset = type("D", (), {"targets": [0, 0, 1, 1], "__len__": lambda self: 4})()
    d = SimpleNamespace(stddev_group=2)
    rt = SimpleNamespace(rank=0, world_size=1, cuda=False)

    def keeps(workers, size):
        args = SimpleNamespace(class_groups=False, class_balanced=False, batch_size=2, seed=0,
                               workers=workers, size=size)
        return cdtg_train.batch_loader(args, dataset, d, 0, rt).dataset.kept is not None

    assert keeps(0, 32) and not keeps(2, 32)
    monkeypatch.setattr(cdtg_train, "KEEP_IMAGES_BYTES", 4 * 3 * 32 * 32 * 4 - 1)
    assert not keeps(0, 32) and keeps(0, 16)


def test_normalised_projection_has_the_noise_norm_and_is_saved_in_its_config():
    proj = FeatureProjection((8, 4, 4), 16, pool=2, normalise=True)
    with torch.no_grad():
        proj.linear.weight.mul_(100)  # a P grown in training
    out = proj(torch.randn(5, 8, 4, 4))
    torch.testing.assert_close(out.norm(dim=1), torch.full((5,), 4.0))  # sqrt(16), E|n| of 16-d noise
    assert proj.config()["normalise"] is True
    # older generator files read alike
    assert "normalise" not in FeatureProjection((8, 4, 4), 16, pool=2).config()


def test_mode_seeking_loss_by_hand():
    fake = torch.zeros(4, 1, 1, 2)
    fake[2] = 0.5  # pair (0, 2) differs by 0.5 per pixel, pair (1, 3) by 0
    z = torch.zeros(4, 3)
    z[2:] = 1.0  # both pairs differ by 1 per latent dimension
    # mean |image difference| 0.25, mean |latent difference| 1 (two style copies alike): 1 / 0.25
    assert float(losses.mode_seeking_loss(fake, [z, z], eps=0.0)) == pytest.approx(4.0)


@pytest.mark.slow  # 2 s: one step of the tiny models
def test_mode_seeking_step_pairs_the_batch_and_freeze_p_keeps_p():
    tr = make_trainer("paper")
    tr.cfg.lambda_ms, tr.cfg.train_p = 1.0, False
    tr = CDTGTrainer(tr.g, tr.d, tr.proj, tr.tail, tr.rt, tr.cfg)
    p_before = snapshot(tr.proj)
    x, y = batch()
    log = tr.step(x, y, 1)
    assert torch.isfinite(log["ms"]) and log["ms"] > 0
    assert not changed(p_before, tr.proj) and not tr.proj.linear.weight.requires_grad


def test_lowpass_removes_the_checkerboard_by_hand():
    checker = (torch.arange(6)[:, None] + torch.arange(6)[None, :]) % 2 * 2.0 - 1  # +-1, period 2
    x = checker.expand(1, 2, 6, 6).clone()
    out = losses.lowpass(x)
    assert torch.allclose(out[..., 1:-1, 1:-1], torch.zeros(1, 2, 4, 4))  # (1 - 2 + 1)^2 / 16 = 0 inside
    assert torch.allclose(losses.lowpass(torch.full((1, 3, 5, 5), 0.7)), torch.full((1, 3, 5, 5), 0.7))
    spike = torch.zeros(1, 1, 5, 5)
    spike[0, 0, 2, 2] = 16.0
    assert losses.lowpass(spike)[0, 0, 1:4, 1:4].tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
    # a loss of lowpass(x)'s inner pixels: its gradient is orthogonal to the checkerboard
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    grad, = torch.autograd.grad((losses.lowpass(x)[..., 1:-1, 1:-1] * torch.randn(1, 2, 4, 4)).sum(), x)
    assert grad.abs().sum() > 0 and abs(float((grad * checker).sum())) < 1e-5


def test_consistency_lowpass_shows_the_tail_model_the_blurred_images(monkeypatch):
    seen = {}
    tr = make_trainer("paper", consistency_lowpass=True)
    forward = tr.tail.forward

    def spy(images):
        seen["x"] = images.detach()
        return forward(images)
    monkeypatch.setattr(tr.tail, "forward", spy)
    fake = torch.rand(2, 3, 32, 32) * 2 - 1
    tr._consistency(fake, torch.tensor([0, 1]), None, train=False)
    assert torch.equal(seen["x"], losses.lowpass(fake))


@pytest.mark.slow  # 2 s: two steps of the tiny models
def test_lazy_consistency_skips_the_terms_and_weights_them_k():
    tr = make_trainer("paper", lambda_cls=0.5, consistency_every=2)
    x, y = batch()
    off = tr.step(x, y, 1)  # 1 % 2: the tail model is not run
    assert "cls" not in off and float(off["g"]) == pytest.approx(float(off["adv"]))
    on = tr.step(x, y, 2)
    assert float(on["g"]) == pytest.approx(float(on["adv"]) + 2 * 0.5 * float(on["cls"]), rel=1e-5)


def test_feature_match_loss_by_hand():
    real = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # squared norms 25 and 1
    fake = torch.tensor([[3.0, 0.0], [0.0, 0.0]])  # squared distances 16 and 1
    assert float(losses.feature_match_loss(fake, real)) == pytest.approx((16 / 25 + 1 / 1) / 2)
    assert float(losses.feature_match_loss(real, real)) == 0.0


@pytest.mark.slow  # 3 s: a few steps of the tiny models
def test_feature_term_pulls_generated_features_towards_the_conditioning_images():
    tr = make_trainer("paper", lambda_feat=1.0)
    x, y = batch()
    feat = tr.features(x)
    log = tr.step(x, y, 1, feat=feat)
    assert "feat" in log and 0 < float(log["feat"]) < float("inf")
    assert "feat" not in make_trainer("paper").step(x, y, 1)
    # the term's gradient reaches G and P: descending it alone brings G's features closer to x's
    optim = torch.optim.Adam(list(tr.g.parameters()) + list(tr.proj.parameters()), lr=0.01)
    torch.manual_seed(0)
    noises = [torch.randn(4, 16)]

    def term():
        fake, _ = tr.g(fused_latents(tr.proj(feat), tr.cfg.r_train, tr.cfg.mixing, noises=noises), y,
                       randomize_noise=False)
        return tr._consistency(fake, y, feat, train=True)["feat"]
    first = float(term().detach())
    for _ in range(15):
        optim.zero_grad()
        term().backward()
        optim.step()
    assert float(term().detach()) < 0.7 * first


def test_reconstruction_loss_by_hand():
    real = torch.zeros(1, 1, 4, 4)
    assert float(losses.reconstruction_loss(torch.full((1, 1, 4, 4), 0.5), real)) == pytest.approx(0.5)
    checker = ((torch.arange(4)[:, None] + torch.arange(4)[None, :]) % 2 * 2.0 - 1).expand(1, 1, 4, 4)
    # a 2-pixel checkerboard costs only what the blur leaves of it at the replicated edges
    inner = (losses.lowpass(checker) - losses.lowpass(real))[..., 1:-1, 1:-1]
    assert torch.allclose(inner, torch.zeros_like(inner))
    assert float(losses.reconstruction_loss(checker, real)) < 0.5


@pytest.mark.slow  # 3 s: a few steps of the tiny models
def test_reconstruction_term_is_logged_and_pulls_g_towards_the_conditioning_images():
    tr = make_trainer("paper", lambda_rec=1.0)
    x, y = batch()
    feat = tr.features(x)
    first = float(tr.step(x, y, 1, feat=feat)["rec"])
    assert "rec" not in make_trainer("paper").step(x, y, 1)
    tr.cfg.lambda_cls = 0.0
    tr.cfg.lambda_rec = 50.0  # the term dominates the adversarial one: G moves towards x
    for i in range(2, 12):
        last = float(tr.step(x, y, i, feat=feat)["rec"])
    assert last < 0.8 * first


def term_over_steps(tr, name: str, steps: int = 21) -> tuple:
    """The logged term `name` at the first and the last of `steps` steps on one batch."""
    x, y = batch()
    feat = tr.features(x)
    values = [float(tr.step(x, y, i, feat=feat)[name]) for i in range(1, steps + 1)]
    return values[0], values[-1]


@pytest.mark.slow  # 5 s: a few steps of the tiny models
def test_lattice_term_is_logged_and_lowers_the_lattice_share_of_g():
    assert "lattice" not in make_trainer("paper").step(*batch(), 1)
    first, last = term_over_steps(make_trainer("paper", lambda_cls=0.0, lambda_lattice=50.0), "lattice")
    assert last < 0.6 * first  # 0.12-0.44 at seeds 0-2


def test_spectral_excess_by_hand():
    mask = losses.high_frequencies(16, 16)  # periods of 8 px or less: |index| >= 2 along either axis
    assert not mask[:2, :2].any() and not mask[-1, 1] and mask[2, 0] and mask[0, 8] and mask[-2, -2]
    assert int(mask.sum()) == 16 * 16 - 3 * 3
    real = torch.full((16, 16), 1 / 256)
    fake = real.expand(2, 16, 16).clone()
    assert float(losses.spectral_excess(fake, real)) == 0  # the real spectrum itself: nothing above twice it
    fake[:, 0, 8] += 0.1  # a peak at the 2-pixel period, in both images: 0.1 + 1/256 - 2/256 above
    fake[:, 1, 1] += 0.5  # a peak at a low frequency is not watched
    assert float(losses.spectral_excess(fake, real)) == pytest.approx(0.1 - 1 / 256)
    fake[1, 0, 8] -= 0.1  # in one image of two: half the mean
    assert float(losses.spectral_excess(fake, real)) == pytest.approx(0.05 - 1 / 256)
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2).float().expand(1, 3, 16, 16)
    shares = losses.spectral_shares(checker)
    assert float(shares[0, 8, 8]) == pytest.approx(1.0) and float(shares.sum()) == pytest.approx(1.0)


@pytest.mark.slow  # 5 s: a few steps of the tiny models
def test_spectrum_term_is_logged_lowers_the_excess_and_its_reference_resumes():
    assert "spectrum" not in make_trainer("paper").step(*batch(), 1)
    tr = make_trainer("paper", lambda_cls=0.0, lambda_spectrum=20.0)
    first, last = term_over_steps(tr, "spectrum")
    assert first > 0 and last < 0.6 * first  # 0.16-0.43 at seeds 0-2
    # one batch throughout: the running mean is that batch's spectrum
    torch.testing.assert_close(tr.real_spectrum, losses.spectral_shares(batch()[0]).mean(0))
    other = make_trainer("paper", lambda_cls=0.0, lambda_spectrum=20.0)
    other.load_state_dict(tr.state_dict())
    torch.testing.assert_close(other.real_spectrum, tr.real_spectrum)


def test_reuse_fakes_runs_g_once_and_shows_d_the_images_of_g_step():
    x, y = batch()
    seen = {}
    for reuse in (False, True):
        tr = make_trainer("paper", lambda_cls=0.0, reuse_fakes=reuse)
        g_out, d_in = seen[reuse] = [], []
        tr.g.register_forward_hook(lambda m, args, out, to=g_out: to.append(out[0].detach().clone()))
        tr.d.register_forward_pre_hook(lambda m, args, to=d_in: to.append(args[0].detach().clone()))
        before = snapshot(tr.d), snapshot(tr.g)
        tr.step(x, y, 1)
        assert changed(before[0], tr.d) and changed(before[1], tr.g)
    assert len(seen[False][0]) == 2 and len(seen[True][0]) == 1
    g_out, d_in = seen[True]
    # G's step (D on G's images), then D's step on the same images beside the real ones (R1 at iteration 1
    # of d_reg_every 2 does not run)
    assert torch.equal(d_in[0], g_out[0])
    d_rows = torch.cat(d_in[1:])
    assert all(any(torch.equal(row, image) for row in d_rows) for image in g_out[0])
    with pytest.raises(ValueError, match="reuse_fakes needs lambda_ms 0"):
        make_trainer("paper", reuse_fakes=True, lambda_ms=1.0)


@pytest.mark.parametrize("batch_size, calls", [(8, 1), (4, 1), (6, 2), (2, 2)])
def test_paired_forward_equals_two_calls_of_the_discriminator(batch_size, calls):
    torch.manual_seed(0)
    d = Discriminator(32, num_classes=3, label_dim=8, max_channels=8)
    seen = []
    d.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    a, b = torch.randn(2, batch_size, 3, 32, 32).unbind(0)
    labels = torch.arange(batch_size) % 3
    pa, pb = paired_forward(d, a, b, labels, d.stddev_group)
    # one call of 2B where 2B keeps each sample's minibatch-stddev group (B = 8: groups of 4 in both; B = 6:
    # groups of 3, but of 4 at 12), else the two calls themselves
    assert seen == ([2 * batch_size] if calls == 1 else [batch_size, batch_size])
    torch.testing.assert_close(pa, d(a, labels), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pb, d(b, labels), rtol=1e-5, atol=1e-5)
