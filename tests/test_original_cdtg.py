"""The original authors' GAN files, rebuilt from tests/fixtures/upstream/ manifests, through the project's own
loaders: the same images and discriminator outputs as the original classes computed (the *_ref.pt references),
strict loading, the exact FromRGB conversion, and one-line errors."""
import json
import os

import pytest
import torch

from CDTG import generator_file, original
from CDTG import train as cdtg_train
from CDTG.conditioning import FeatureProjection
from CDTG.model import build_models
from common.backbones import build_feature_resnet
from common.config import resolve_args
from common.errors import UserError
from common.part_model import part_meta, save_part_model
from conftest import assert_one_line_error, run_script
from upstream_files import cdtg_args, manifest, reference, write_original

TOL = 1e-4
FEATURE = (256, 2, 2)  # layer3 of a resnet18 tail model at 32 px


@pytest.fixture(scope="module")
def tail12_root(tmp_path_factory):
    """A tiny data set whose split has 12 tail classes, as the original files (4 head + 12 tail, 32 px)."""
    root = str(tmp_path_factory.mktemp("tail12") / "data")
    run_script("data/synthetic/prepare.py", "--output-dir", root, "--classes", "16", "--n-max", "12",
               "--n-test", "2", "--size", "32", "--imbalance", "4")
    run_script("data/split.py", "--data-root", root, "--head-percent", "25")
    return root


@pytest.fixture(scope="module")
def tail_model_file(tail12_root, tmp_path_factory):
    with open(os.path.join(tail12_root, "split.json")) as f:
        split = json.load(f)
    torch.manual_seed(0)
    model = build_feature_resnet("resnet18", len(split["tail"]), "none", verbose=False)
    path = str(tmp_path_factory.mktemp("tail") / "tail_model.pt")
    save_part_model(model, path, part_meta(model, "resnet18", "tail", split, 32, "half"))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("original")
    return {"cdtg": write_original(folder, "cdtg_200000_size32.json"),
            "rosinality": write_original(folder, "swagan_rosinality_size32.json", "rosinality.pt"),
            "satconcepts": write_original(folder, "swagan_satconcepts_size32.json", "satconcepts.pt")}


def train_args(root, ckpt, *extra):
    return resolve_args(cdtg_train.get_args_parser(), "cdtg_train",
                        ["--data-root", root, "--tail-model", "unused.pt", "--size", "32", "--ckpt", ckpt,
                         *extra])


def load_for_training(root, ckpt, *extra):
    """G, D, g_ema as CDTG/train.py builds and fills them from --ckpt."""
    args = train_args(root, ckpt, *extra)
    ck = original.read_initial_checkpoint(args, 12)
    g, d = build_models(args, 12)
    g_ema = build_models(args, 12)[0]
    proj, p_ema = FeatureProjection(FEATURE, 512), FeatureProjection(FEATURE, 512)
    original.load_initial_weights(ck, ckpt, g, d, g_ema, proj, p_ema)
    return g, d, g_ema


def close(what, ours, ref):
    """Max abs difference within TOL; printed, so `pytest -s` shows each measured figure."""
    diff = float((ours - ref).detach().abs().max())
    print(f"max abs difference, {what}: {diff:.3g}")
    assert diff <= TOL, (what, diff)


# ------------------------------------------------------------------------------------------------ equivalence


@pytest.mark.slow
def test_generator_of_200000_pt_draws_the_original_images(files, tail12_root, capsys):
    ref = reference("cdtg_size32_ref.pt")
    g_state, p_state, meta = generator_file.read(files["cdtg"], tail12_root)
    assert p_state is None and meta["generator"] == {"size": 32, "style_dim": 512, "n_mlp": 8,
                                                     "num_classes": 12, "channel_multiplier": 2,
                                                     "max_channels": None}
    g, proj = generator_file.build(meta, g_state, p_state, "cpu", FEATURE, seed=3)
    assert "P is random (seed 3)" in capsys.readouterr().out
    again = original.random_projection(FEATURE, 512, 3)
    assert torch.equal(proj.linear.weight, again.linear.weight)  # seeded by --seed
    z1, z2, labels, noise = ref["z1"], ref["z2"], ref["labels"], ref["noise"]
    with torch.no_grad():
        close("G one latent", g([z1], labels, noise=noise)[0], ref["img_single"])
        close("G two latents, inject_index 3", g([z1, z2], labels, noise=noise, inject_index=3)[0],
              ref["img_mix_inject3"])
        close("G buffer noise", g([z1], labels, randomize_noise=False)[0], ref["img_buffer_noise"])
        image, latent = g([z1], labels, noise=noise, truncation=0.7, truncation_latent=ref["mean_w"],
                          return_latents=True)
    close("G truncation 0.7, image", image, ref["img_trunc07"])
    close("G truncation 0.7, latents", latent, ref["latent_trunc07"])


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["1", "3"])
def test_discriminator_of_200000_pt_matches_the_original(files, tail12_root, kernel, capsys):
    ref = reference("cdtg_size32_ref.pt")
    _g, d, g_ema = load_for_training(tail12_root, files["cdtg"], "--from-rgb-kernel", kernel)
    out = capsys.readouterr().out
    assert "TGN's CDTG checkpoint" in out and "left at init (not in the file): P, P_ema\n" in out
    assert ("converted 1x1 -> 3x3 exactly" in out) == (kernel == "3")
    assert d.from_rgbs[0].conv[0].weight.shape[-1] == int(kernel)
    real = ref["real"].clone().requires_grad_(True)
    pred = d(real, ref["labels"])
    pred.sum().backward()
    close(f"D output, FromRGB {kernel}x{kernel}", pred, ref["d_out"])
    close(f"D input gradient, FromRGB {kernel}x{kernel}", real.grad, ref["d_grad_input"])
    with torch.no_grad():  # the file's g_ema, not g, lands in g_ema
        close("train.py's g_ema, one latent", g_ema([ref["z1"]], ref["labels"], noise=ref["noise"])[0],
              ref["img_single"])


@pytest.mark.slow
@pytest.mark.parametrize("layout,kernel", [("rosinality", "3"), ("satconcepts", "1")])
def test_unconditional_swagan_generator_from_both_layouts(files, tail12_root, layout, kernel, capsys):
    ref = reference(f"swagan_{layout}_size32_ref.pt")
    _, _, g_ema = load_for_training(tail12_root, files[layout], "--from-rgb-kernel", kernel)
    out = capsys.readouterr().out
    assert ("left at init (not in the file): g.label_emb.weight, d.label_emb.weight, d.fusion_conv.0.weight, "
            "d.fusion_conv.1.bias, g_ema.label_emb.weight, P, P_ema\n") in out
    with torch.no_grad():  # unconditional: the mapping network on z alone
        image, _ = g_ema([g_ema.style(ref["z"])], input_is_latent=True, noise=ref["noise"])
    close(f"unconditional G, {layout} layout", image, ref["img"])


@pytest.mark.slow
def test_satconcepts_d_through_the_3x3_conversion(files, tail12_root):
    _, d1, _ = load_for_training(tail12_root, files["satconcepts"])
    _, d3, _ = load_for_training(tail12_root, files["satconcepts"], "--from-rgb-kernel", "3")
    d3.label_emb.load_state_dict(d1.label_emb.state_dict())
    d3.fusion_conv.load_state_dict(d1.fusion_conv.state_dict())
    real, labels = reference("cdtg_size32_ref.pt")["real"], torch.tensor([3, 7])
    close("SatConcepts D, 1x1 against its 3x3 conversion", d1(real, labels), d3(real, labels))


def test_from_rgb_conversion_is_exact_both_ways_and_refuses_a_true_3x3():
    w1 = torch.randn(8, 12, 1, 1)
    w3 = original.from_rgb_1_to_3(w1)
    assert w3.shape == (8, 12, 3, 3) and torch.equal(w3[:, :, 1, 1], 3 * w1[:, :, 0, 0])
    off_centre = torch.ones(3, 3, dtype=torch.bool)
    off_centre[1, 1] = False
    assert not w3[:, :, off_centre].any()
    assert torch.allclose(original.from_rgb_3_to_1(w3, "x"), w1)
    with pytest.raises(UserError, match="non-zero off-centre taps.*--from-rgb-kernel 3"):
        original.from_rgb_3_to_1(torch.randn(8, 12, 3, 3), "d.from_rgbs.0.conv.0.weight")


@pytest.mark.parametrize("name", ["cdtg_200000_size256.json", "swagan_rosinality_size256.json",
                                  "swagan_satconcepts_size256.json"])
def test_256px_manifests_fit_the_paper_configuration_strictly(name):
    # names and shapes only (zero tensors), checked against meta-device models built by train.py's flags
    m = manifest(name)
    ck = {k: {e["name"]: torch.zeros(e["shape"]) for e in m["models"][k]["tensors"]}
          for k in ("g", "d", "g_ema")}
    ck["args"] = cdtg_args(256)
    kernel = "3" if "rosinality" in name else "1"
    args = resolve_args(cdtg_train.get_args_parser(), "cdtg_train", ["--from-rgb-kernel", kernel])
    with torch.device("meta"):
        g, d = build_models(args, 12)
    layout, states, left, converted = original.plan(ck, name, {"g": g, "d": d, "g_ema": g})
    assert converted is None and all(len(states[k]) == len(ck[k]) for k in ck if k != "args")
    assert left == ([] if layout.conditional else
                    ["g.label_emb.weight", "d.label_emb.weight", "d.fusion_conv.0.weight",
                     "d.fusion_conv.1.bias", "g_ema.label_emb.weight"])


# ------------------------------------------------------------------------------------------ continue, convert


@pytest.mark.slow
def test_continue_original_restores_iteration_optimisers_and_ada_p(files, tail12_root, tail_model_file,
                                                                   tmp_path):
    ck = torch.load(files["cdtg"], weights_only=False)
    for key in ("g_optim", "d_optim"):  # an original run's Adam: 10 steps taken
        ck[key]["state"] = {i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(()),
                                "exp_avg_sq": torch.zeros(())}
                            for i in ck[key]["param_groups"][0]["params"]}
    sizes = {"g_optim": [v.shape for k, v in ck["g"].items() if not k.startswith(("noises.", "iwt.")) and
                         k.rsplit(".", 1)[-1] not in ("ll", "lh", "hl", "hh", "kernel")],
             "d_optim": [v.shape for k, v in ck["d"].items()
                         if k.rsplit(".", 1)[-1] not in ("ll", "lh", "hl", "hh",
                                                           "kernel")]}
    for key, shapes in sizes.items():
        for i, shape in zip(ck[key]["param_groups"][0]["params"], shapes, strict=True):
            ck[key]["state"][i].update(exp_avg=torch.zeros(shape), exp_avg_sq=torch.zeros(shape))
    ck["ada_aug_p"] = 0.25
    path = tmp_path / "200000.pt"
    torch.save(ck, path)
    out = tmp_path / "run"
    args = train_args(tail12_root, str(path), "--tail-model", tail_model_file, "--continue-original",
                      "--iter", "200001", "--mode", "code", "--lambda-clip", "0", "--batch-size", "2",
                      "--workers", "0", "--feature-pool", "1", "--sample-cols", "1", "--augment",
                      "--device", "cpu", "--output-dir", str(out))
    cdtg_train.main.__wrapped__(args)
    ck = torch.load(out / "ckpt_last.pt", weights_only=False)
    assert ck["iteration"] == 200001
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == [200001]
    group = ck["g_optim"]["param_groups"][0]
    assert group["lr"] == pytest.approx(0.002 * 4 / 5) and group["betas"][1] == pytest.approx(0.99 ** 0.8)
    # iteration 200000 runs both lazy regularisers: 10 restored steps + 2 for G (G, path) and for D (D, R1)
    assert {float(s["step"]) for key in ("g_optim", "d_optim") for s in ck[key]["state"].values()} == {12.0}
    assert ck["augment"]["p"] == pytest.approx(0.25, abs=1e-3)
    assert ck["meta"]["discriminator"] == {"label_dim": 512, "from_rgb_kernel": 1}


def test_convert_to_project_writes_a_generator_file(files, tail12_root, tmp_path):
    out = tmp_path / "generator.pt"
    original.convert_to_project(files["cdtg"], str(out), tail12_root)
    g_state, p_state, meta = generator_file.read(str(out))
    with open(os.path.join(tail12_root, "split.json")) as f:
        split = json.load(f)
    assert p_state is None and meta["classes"] == split["tail"]
    assert meta["names"] == [split["names"][c] for c in split["tail"]] and meta["iteration"] == 200000
    file_g_ema = torch.load(files["cdtg"], weights_only=False)["g_ema"]
    assert all(torch.equal(g_state[k], v) for k, v in file_g_ema.items()) and len(g_state) == len(file_g_ema)


@pytest.mark.slow
def test_generate_cli_on_the_original_file(files, tail12_root, tail_model_file, tmp_path):
    out = tmp_path / "gen"
    proc = run_script("CDTG/generate.py", "--ckpt", files["cdtg"], "--data-root", tail12_root, "--tail-model",
                      tail_model_file, "--n-per-class", "2", "--per-real", "2", "--batch-size", "2",
                      "--classes", "0", "--workers", "1", "--device", "cpu", "--output-dir", str(out))
    assert "P is random (seed 0): the generator file holds none" in proc.stdout
    manifest_ = json.loads((out / "manifest.json").read_text())
    assert [(e["class_id"], e["count"]) for e in manifest_["classes"]] == [(0, 2)]
    assert sorted(os.listdir(out / "0")) == ["00000.jpg", "00001.jpg"]


# ------------------------------------------------------------------------------------------------ errors


@pytest.mark.slow
def test_class_count_differs_from_the_tail_classes(files, synth_root, tmp_path):
    proc = run_script("CDTG/generate.py", "--ckpt", files["cdtg"], "--data-root", synth_root, "--tail-model",
                      "x.pt", "--output-dir", str(tmp_path / "g"), check=False)
    assert_one_line_error(proc, "generator of 12 classes", "6 tail classes")
    assert not (tmp_path / "g").exists()
    with pytest.raises(UserError, match="no class names: pass --data-root"):
        generator_file.read(files["cdtg"])
    with pytest.raises(UserError,
                       match="not a CDTG generator but an unconditional SWAGAN in SatConcepts' layout"):
        generator_file.read(files["satconcepts"], synth_root)


@pytest.mark.slow
def test_unknown_layouts_name_the_nearest(files, tail12_root, tail_model_file, tmp_path):
    ck = torch.load(files["cdtg"], weights_only=False)
    with pytest.raises(UserError, match="nearest: TGN's CDTG checkpoint.*lacks"):
        original.detect({"model": ck["g"]}, "x.pt")
    half = {**ck, "d": {k: v for k, v in ck["d"].items() if not k.startswith("fusion_conv")}}
    nearest = r"nearest: TGN's CDTG checkpoint \(conditional SWAGAN, 1x1 FromRGB\); keys that differ: "
    with pytest.raises(UserError, match=nearest + r"d.fusion_conv.0.weight, d.fusion_conv.1.bias$"):
        original.detect(half, "x.pt")
    path = tmp_path / "bare.pt"
    torch.save(ck["g_ema"], path)
    proc = run_script("CDTG/train.py", "--data-root", tail12_root, "--tail-model", tail_model_file, "--ckpt",
                      str(path), "--size", "32", "--lambda-clip", "0", "--device", "cpu",
                      "--output-dir", str(tmp_path / "run"), check=False)
    assert_one_line_error(proc, "bare.pt is none of the known GAN checkpoint layouts; nearest: TGN's CDTG",
                          "g, d, g_ema, g_optim, d_optim, args, ada_aug_p")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_tensors_left_at_init_or_unused_are_errors(files, tail12_root, tmp_path):
    ck = torch.load(files["cdtg"], weights_only=False)
    for name, broken, message in [
            ("missing.pt", {**ck, "d": {k: v for k, v in ck["d"].items() if k != "final_conv.1.bias"}},
             "d.final_conv.1.bias is not in the file and would stay at init"),
            ("extra.pt", {**ck, "g": {**ck["g"], "extra.weight": torch.zeros(1)}},
             "g.extra.weight has no place"),
            ("shape.pt", {**ck, "d": {**ck["d"], "label_emb.weight": torch.zeros(12, 64)}},
             r"d.label_emb.weight is \[12, 64\] in the file but \[12, 512\]")]:
        torch.save(broken, tmp_path / name)
        with pytest.raises(UserError, match=message):
            original.read_initial_checkpoint(train_args(tail12_root, str(tmp_path / name)), 12)
    with pytest.raises(UserError, match="pass --size 32"):
        original.read_initial_checkpoint(train_args(tail12_root, files["cdtg"], "--size", "64"), 12)
    with pytest.raises(UserError, match="non-zero off-centre taps"):
        original.read_initial_checkpoint(train_args(tail12_root, files["rosinality"]), 12)
    with pytest.raises(UserError, match="1x1 FromRGB: continue its run with --from-rgb-kernel 1"):
        original.read_initial_checkpoint(train_args(tail12_root, files["cdtg"], "--continue-original",
                                                    "--iter", "200001", "--from-rgb-kernel", "3"), 12)
    with pytest.raises(UserError, match="iteration 200000; pass an --iter above it"):
        original.read_initial_checkpoint(train_args(tail12_root, files["cdtg"], "--continue-original"), 12)
