"""CDTG generation, the expanded training list, and the generation-quality measures."""
import json
import math
import os
import pathlib

import numpy as np
import pytest
import torch

from CDTG import evaluate, expand, generate, quality
from CDTG import train as cdtg_train
from CDTG.losses import lattice_shares
from CDTG.quality import (
    frechet_distance,
    kernel_inception_distance,
    load_lpips,
    mean_pairwise_distance,
    mean_pairwise_lpips,
    share_correct,
)
from common.backbones import build_classifier, build_feature_resnet
from common.checkpoint import export_weights
from common.datasets import ImageList
from common.errors import UserError
from common.layout import anno_path, read_list
from common.part_model import part_meta, save_part_model
from conftest import assert_one_line_error, call_main, run_main

TINY_TRAIN = ["--size", "32", "--style-dim", "16", "--n-mlp", "1", "--max-channels", "8", "--label-dim", "8",
              "--batch-size", "4", "--workers", "0", "--lambda-clip", "0", "--iter", "2", "--sample-every",
              "2", "--ckpt-every", "2", "--sample-cols", "2", "--feature-pool", "1", "--device", "cpu"]


def call(module, stage, argv):
    return call_main(module, stage, *argv)


@pytest.fixture(scope="module")
def split(synth_root):
    with open(os.path.join(synth_root, "split.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def generator_file(synth_root, split, tmp_path_factory):
    """generator.pt of a 2-iteration CDTG run on a random resnet18 tail model (KMDN's file format)."""
    folder = tmp_path_factory.mktemp("cdtg")
    torch.manual_seed(0)
    model = build_feature_resnet("resnet18", len(split["tail"]), "none", verbose=False)
    tail_path = str(folder / "tail_model.pt")
    save_part_model(model, tail_path, part_meta(model, "resnet18", "tail", split, 32, "half"))
    call(cdtg_train, "cdtg_train", ["--data-root", synth_root, "--tail-model", tail_path,
                                    "--output-dir", str(folder / "train"), *TINY_TRAIN])
    return str(folder / "train" / "generator.pt")


def gen(generator_file, out, *extra):
    return call(generate, "cdtg_generate",
                ["--ckpt", generator_file, "--output-dir", str(out), "--workers", "1",
                 "--device", "cpu", "--batch-size", "4", *extra])


@pytest.fixture(scope="module")
def generated(generator_file, split, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "run"
    names = [split["names"][c] for c in split["tail"]]
    # two classes, one by id and one by name; 7 images = 1 batch of 4 (per-real 2) and a partial one
    gen(generator_file, out, "--n-per-class", "7", "--per-real", "2", "--classes", str(split["tail"][0]),
        names[-1], "--grid-cols", "3")
    return out


def test_generation_writes_n_images_per_class_and_a_manifest(generated, split):
    manifest = json.loads((generated / "manifest.json").read_text())
    want = [split["tail"][0], split["tail"][-1]]
    assert [e["class_id"] for e in manifest["classes"]] == want
    assert [e["tail_label"] for e in manifest["classes"]] == [0, len(split["tail"]) - 1]
    assert manifest["r"] == 0.05 and manifest["n_per_class"] == 7 and manifest["per_real"] == 2
    for cid in want:
        files = sorted(os.listdir(generated / str(cid)))
        assert files == [f"{i:05d}.jpg" for i in range(7)]
    rows = (generated / "sources.csv").read_text().splitlines()
    assert len(rows) == 1 + 14
    _, cid, real = rows[1].split(",")
    # generated from a real image of its own class
    assert int(cid) == want[0] and f"/train/{want[0]}/" in real
    from PIL import Image
    with Image.open(generated / "grid.png") as im:
        assert im.size == (2 + 3 * 34, 2 + 2 * 34)
    with Image.open(generated / str(want[0]) / "00000.jpg") as im:
        assert im.size == (32, 32)


def test_generation_never_overwrites(generator_file, generated, split, tmp_path):
    first = generated / str(split["tail"][0]) / "00000.jpg"
    before = first.read_bytes()
    with pytest.raises(UserError, match=r"other settings: .*--n-per-class 2 \(the run has 7\)"):
        gen(generator_file, generated, "--n-per-class", "2")
    assert first.read_bytes() == before
    proc = run_main(generate, "cdtg_generate", "--ckpt", generator_file, "--output-dir", generated,
                    "--n-per-class", "2", "--device", "cpu", check=False)
    assert_one_line_error(proc, "--n-per-class 2 (the run has 7)", "nothing there is overwritten")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="holds files that no cdtg_generate run wrote"):
        gen(generator_file, tmp_path / "mine")
    assert (tmp_path / "mine" / "photo.jpg").read_bytes() == b"x"


def test_generation_input_errors(generator_file, tmp_path):
    with pytest.raises(UserError, match="not a tail class"):
        gen(generator_file, tmp_path / "a", "--classes", "no-such-class")
    torch.save({"g": {}, "d": {}, "g_ema": {}}, tmp_path / "swagan.pt")
    with pytest.raises(UserError, match="not a CDTG generator"):
        gen(str(tmp_path / "swagan.pt"), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_expand_maps_tail_labels_back_to_original_ids(generated, synth_root, split, tmp_path):
    out = tmp_path / "expanded.txt"
    call(expand, "cdtg_expand", ["--generated", str(generated), "--out", str(out)])
    rows = read_list(str(out), len(split["names"]))
    manifest = json.loads((generated / "manifest.json").read_text())
    assert len(rows) == 14
    for entry in manifest["classes"]:
        assert entry["class_id"] == split["tail"][entry["tail_label"]]
        mine = [p for p, c in rows if c == entry["class_id"]]
        assert len(mine) == 7 and all(not os.path.isabs(p) and f"/{entry['class_id']}/" in p for p in mine)
        # relative to <root>/train
        assert all(os.path.isfile(os.path.join(synth_root, "train", p)) for p in mine)
    # the Classification stage reads the original list plus this one
    data = ImageList(os.path.join(synth_root, "train"), [anno_path(synth_root, "train"), str(out)],
                     num_classes=len(split["names"]))
    assert len(data) == sum(split["train_counts"]) + 14
    before = out.stat().st_mtime_ns
    assert "already lists these 14 images; nothing to do" in run_main(expand, "cdtg_expand", "--generated",
                                                                      generated, "--out", out).stdout
    assert out.stat().st_mtime_ns == before
    with pytest.raises(UserError, match="already exists with other lines; pass --overwrite"):
        call(expand, "cdtg_expand", ["--generated", str(generated), "--out", str(out), "--n-per-class", "3"])
    call(expand, "cdtg_expand",
         ["--generated", str(generated), "--out", str(out), "--overwrite", "--n-per-class", "3"])
    assert len(read_list(str(out))) == 6


@pytest.mark.slow
def test_the_chain_survives_moving_runs_and_data_together(synth_root, tmp_path):
    """split.json, the generator's meta, manifest.json and the expanded list hold relative paths: a tree moved
    elsewhere (train on a cluster, evaluate on a laptop) still reads as one chain."""
    import shutil

    from CDTG.manifest import read_manifest
    from data import split as data_split
    tree = tmp_path / "here"
    data, runs = tree / "data", tree / "runs"
    shutil.copytree(synth_root, data)
    call(data_split, "split", ["--data-root", str(data), "--head-percent", "40", "--overwrite"])
    split = json.loads((data / "split.json").read_text())
    assert split["root"] == "."
    torch.manual_seed(0)
    model = build_feature_resnet("resnet18", len(split["tail"]), "none", verbose=False)
    os.makedirs(runs / "kmdn")
    save_part_model(model, str(runs / "kmdn" / "tail_model.pt"),
                    part_meta(model, "resnet18", "tail", split, 32, "half"))
    call(cdtg_train, "cdtg_train",
         ["--data-root", str(data), "--tail-model", str(runs / "kmdn" / "tail_model.pt"),
          "--output-dir", str(runs / "train"), *TINY_TRAIN])
    meta = torch.load(runs / "train" / "generator.pt", weights_only=False)["meta"]
    assert meta["data_root"] == os.path.join("..", "..", "data")
    assert meta["tail_model"] == os.path.join("..", "kmdn", "tail_model.pt")
    gen(str(runs / "train" / "generator.pt"), runs / "gen", "--n-per-class", "2", "--per-real", "2",
        "--classes", str(split["tail"][0]))
    stored = json.loads((runs / "gen" / "manifest.json").read_text())
    assert stored["data_root"] == os.path.join("..", "..", "data") and "clip" in stored
    assert stored["checkpoint"] == os.path.join("..", "train", "generator.pt")
    call(expand, "cdtg_expand", ["--generated", str(runs / "gen"), "--out", str(runs / "expanded_train.txt")])

    moved = tmp_path / "there"
    os.rename(tree, moved)
    data, runs = moved / "data", moved / "runs"
    manifest = read_manifest(str(runs / "gen"))
    assert manifest["data_root"] == str(data)
    assert manifest["tail_model"] == str(runs / "kmdn" / "tail_model.pt")
    assert os.path.isfile(manifest["checkpoint"])
    listed = ImageList(str(data / "train"), [str(runs / "expanded_train.txt")],
                       num_classes=len(split["names"]))
    assert len(listed) == 2 and all(p.startswith(str(runs / "gen")) for p, _ in listed.samples)
    gen(str(runs / "train" / "generator.pt"), runs / "gen2", "--n-per-class", "1", "--classes",
        str(split["tail"][0]))
    stored2 = json.loads((runs / "gen2" / "manifest.json").read_text())
    assert stored2["data_root"] == os.path.join("..", "..", "data")
    # files written before hold absolute paths: they are read as they are
    old = {**stored, "data_root": str(data), "checkpoint": str(runs / "train" / "generator.pt")}
    (runs / "gen" / "manifest.json").write_text(json.dumps(old))
    assert read_manifest(str(runs / "gen"))["data_root"] == str(data)


def test_expand_refuses_an_incomplete_folder(generated, tmp_path):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(generated, copy)
    first = min(p for p in copy.iterdir() if p.is_dir())
    (first / "00003.jpg").unlink()
    with pytest.raises(UserError, match="removed or added after the generation finished"):
        expand.expand([str(copy)])


# ------------------------------------------------------------------------------------------------ quality


def test_quality_measures_on_hand_made_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    shifted = x + np.array([2.0, 0, 0])
    assert frechet_distance(x, shifted) == pytest.approx(4.0, rel=1e-6)  # same covariance: |mu difference|^2
    scaled = rng.normal(size=(4000, 3)) * 2  # cov 4I vs I: tr(I + 4I - 2 * 2I) = 3 per the formula
    assert frechet_distance(rng.normal(size=(4000, 3)), scaled) == pytest.approx(3.0, rel=0.1)
    kid, _ = kernel_inception_distance(x[:500], x[500:1000], subsets=10, subset_size=200)
    far, _ = kernel_inception_distance(x[:500], shifted[:500], subsets=10, subset_size=200)
    assert abs(kid) < 0.05 < far
    triangle = np.array([[0, 0], [1, 0], [0.5, 3 ** 0.5 / 2]])
    assert mean_pairwise_distance(triangle) == pytest.approx(1.0)
    assert mean_pairwise_distance(np.ones((5, 4))) == 0.0
    assert share_correct([1, 2, 2, 0], 2) == 0.5


@pytest.mark.slow
def test_lattice_share_of_a_checkerboard_a_lattice_a_smooth_image_and_an_odd_size():
    i = torch.arange(16.0)
    checker = ((i[:, None] + i[None, :]) % 2).expand(3, 16, 16)  # period 2: all its power at (8, 8)
    lines = (i[None, :] % 4 < 2).float().expand(3, 16, 16)  # vertical bars of period 4: (0, 4), (0, 8), ...
    smooth = torch.cos(2 * math.pi * i / 16)[None, :].expand(3, 16, 16)  # period 16: none at the lattice
    shares = lattice_shares(torch.stack([checker, lines, smooth, torch.ones(3, 16, 16)]))
    torch.testing.assert_close(shares, torch.tensor([1.0, 1.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    mixed = lattice_shares((smooth + 0.5 * (checker - 0.5))[None])  # power 2 x 128^2 and 64^2: 1/9 at (8, 8)
    torch.testing.assert_close(mixed, torch.tensor([1 / 9]), atol=1e-6, rtol=0)
    assert torch.isnan(lattice_shares(torch.rand(2, 3, 18, 16))).all()


def test_lpips_with_a_random_trunk_is_zero_only_for_identical_images():
    torch.manual_seed(0)
    model, note = load_lpips("alex", "cpu", random_trunk=True)  # the package's own linear layers, no download
    assert note is None
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    assert mean_pairwise_lpips(model, images[:1].expand(4, -1, -1, -1).clone()) == pytest.approx(0, abs=1e-7)
    assert mean_pairwise_lpips(model, images) > 1e-4
    noisier = mean_pairwise_lpips(model, torch.stack([images[0], (images[0] + 0.5 * torch.randn(3, 32, 32))]))
    slightly = mean_pairwise_lpips(model,
                                   torch.stack([images[0], (images[0] + 0.05 * torch.randn(3, 32, 32))]))
    assert noisier > slightly > 0


def test_lpips_without_backbone_weights_is_a_note(monkeypatch):
    import lpips.pretrained_networks

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(lpips.pretrained_networks.tv, "alexnet", offline)
    model, note = load_lpips("alex")
    assert model is None and note == "unavailable: LPIPS alex backbone weights could not be loaded (OSError)"


class MeanAbsDifference(torch.nn.Module):
    """A stand-in for LPIPS (whose backbone weights cannot be downloaded here): mean |a - b| per pair."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, a, b):
        return (a - b).abs().mean([1, 2, 3])


def test_mean_pairwise_lpips_with_a_stand_in_model():
    images = torch.stack([torch.full((3, 4, 4), v) for v in (0.0, 0.5, 1.0)])
    assert mean_pairwise_lpips(MeanAbsDifference(), images) == pytest.approx((0.5 + 1.0 + 0.5) / 3)


@pytest.mark.slow
def random_classifier_file(tmp_path, names):
    """An untrained ResNet-18 on every class, exported as Classification/train.py does (32 px)."""
    torch.manual_seed(0)
    clf = build_classifier("resnet18", len(names), "none", verbose=False)
    path = tmp_path / "model_final.pt"
    export_weights(clf, str(path), arch="resnet18", names=names, img_size=32, norm="half", dataset="SYNTH")
    return path


def test_evaluate_writes_quality_json_and_markdown(generated, synth_root, split, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "load_lpips", lambda net, device: (MeanAbsDifference(), None))
    import shutil
    folder = tmp_path / "gen"
    shutil.copytree(generated, folder)
    from common.layout import read_classes
    names = read_classes(synth_root)["names"]
    clf_path = random_classifier_file(tmp_path, names)
    import open_clip

    from common.clip import checkpoint_dict, register_model_config
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    register_model_config("cdtg-eval-clip", cfg)
    torch.save(checkpoint_dict(open_clip.create_model("cdtg-eval-clip"), "cdtg-eval-clip", cfg),
               tmp_path / "clip.pt")
    call(evaluate, "cdtg_evaluate",
         ["--generated", str(folder), "--classifier", str(clf_path), "--workers", "0",
          "--device", "cpu", "--kid-subsets", "5", "--clip-model", "cdtg-eval-clip",
          "--clip-pretrained", str(tmp_path / "clip.pt")])
    res = json.loads((folder / "quality.json").read_text())
    assert [c["class_id"] for c in res["per_class"]] == [split["tail"][0], split["tail"][-1]]
    for c in res["per_class"]:
        assert c["n_generated"] == 7 and c["n_real"] == split["train_counts"][c["class_id"]]
        for key in ("tail_model_consistency", "classifier_consistency", "real_classifier_consistency",
                    "clip_consistency", "real_clip_consistency"):
            assert 0 <= c[key] <= 1
        assert c["feature_diversity"] > 0 and c["fid"] >= 0 and c["lpips_diversity"] > 0
        assert 0 <= c["lattice_share"] <= 1 and 0 <= c["real_lattice_share"] <= 1
    assert "pooled_fid" in res["overall"] and res["lpips"] == "LPIPS alex"
    md = (folder / "quality.md").read_text()
    assert "| class |" in md and "all tail classes" in md
    o = res["overall"]
    assert (f"mean over the classes: generated {1000 * o['lattice_share']:.1f}\u2030, real "
            f"{1000 * o['real_lattice_share']:.1f}\u2030.") in md
    with pytest.raises(UserError, match=r"quality.json already holds the result of other settings: "
                                        r"--classifier None \(it has '.*model_final.pt'\); .*pass "
                                        r"--overwrite"):
        call(evaluate, "cdtg_evaluate", ["--generated", str(folder), "--device", "cpu", "--workers", "0"])
    again = run_main(evaluate, "cdtg_evaluate", "--generated", folder, "--classifier", clf_path, "--workers",
                     "0", "--device", "cpu", "--kid-subsets", "5", "--clip-model", "cdtg-eval-clip",
                     "--clip-pretrained", tmp_path / "clip.pt")
    assert "quality.json is already finished with these settings; nothing to do" in again.stdout


def test_evaluate_takes_the_clip_settings_from_the_manifest(generator_file, tmp_path, capsys):
    cfg = {"model": "ViT-B-32", "pretrained": "clip.pt", "prompt": "an image of a {name}"}
    assert evaluate.clip_settings({"clip": cfg, "checkpoint": str(tmp_path / "gone.pt")}) == cfg
    assert evaluate.clip_settings({"clip": None, "checkpoint": generator_file}) == {}
    assert "note" not in capsys.readouterr().out  # the training checkpoint is not opened
    ck = torch.load(generator_file, weights_only=False)
    ck["meta"]["clip"] = cfg
    torch.save(ck, tmp_path / "generator.pt")
    # a manifest written before it held them: the training checkpoint, with a note
    assert evaluate.clip_settings({"checkpoint": str(tmp_path / "generator.pt")}) == cfg
    assert "read for the CLIP settings only" in capsys.readouterr().out
    assert evaluate.clip_settings({"checkpoint": str(tmp_path / "gone.pt")}) == {}


def read_folder(folder) -> dict:
    """{relative path: bytes} of every file of a generated folder, manifest.json without its run time."""
    files = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), folder)
            if rel in ("args.yaml", "meta.json", ".lock"):
                continue
            files[rel] = pathlib.Path(dirpath, name).read_bytes()
    manifest = json.loads(files.pop("manifest.json"))
    manifest.pop("seconds")
    return {**files, "manifest.json": manifest}


@pytest.mark.slow
def test_interrupted_generation_is_finished_by_the_same_command(generator_file, split, tmp_path):
    from conftest import run_script
    argv = ["--ckpt", generator_file, "--workers", "2", "--device", "cpu", "--batch-size", "4",
            "--n-per-class", "7", "--per-real", "2", "--classes", str(split["tail"][0]),
            str(split["tail"][1]), "--grid-cols", "3"]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    run_main(generate, "cdtg_generate", *argv, "--output-dir", whole)
    # Ctrl-C in the 4th batch: the second of the second class, after its first 4 images
    proc = run_script("tests/interrupting.py", "CDTG.sampling:to_uint8@4", "CDTG/generate.py", *argv,
                      "--output-dir", stopped, check=False)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (f"interrupted; the images in {stopped} are kept: run the "
                                                    f"same command again to continue")
    second = stopped / str(split["tail"][1])
    assert not (stopped / "manifest.json").exists() and len(os.listdir(stopped / str(split["tail"][0]))) == 7
    # whole files only, no temporaries
    assert sorted(os.listdir(second)) == [f"{i:05d}.jpg" for i in range(4)]
    with pytest.raises(UserError, match=f"the generation into {stopped} has not finished .*: run the same "
                                        f"CDTG/generate.py command again to finish it"):
        call(expand, "cdtg_expand", ["--generated", str(stopped), "--out", str(tmp_path / "list.txt")])
    proc = run_main(generate, "cdtg_generate", *argv, "--output-dir", stopped)
    assert "(4 kept from before)" in proc.stdout and "continuing 7 images" in proc.stdout
    assert read_folder(stopped) == read_folder(whole)
    call(expand, "cdtg_expand", ["--generated", str(stopped), "--out", str(tmp_path / "list.txt")])
    again = run_main(generate, "cdtg_generate", *argv, "--output-dir", stopped)
    assert "is finished (manifest.json)" in again.stdout and "nothing to do" in again.stdout
    assert read_folder(stopped) == read_folder(whole)
    # the batch size may change on the way (e.g. after running out of memory): the same images
    third = tmp_path / "third"
    proc = run_script("tests/interrupting.py", "CDTG.sampling:to_uint8@2", "CDTG/generate.py", *argv,
                      "--output-dir", third, check=False)
    assert proc.returncode == 130
    run_main(generate, "cdtg_generate", *[a if a != "4" else "2" for a in argv], "--output-dir", third)
    assert read_folder(third) == read_folder(whole)


def test_out_of_memory_in_generation_names_the_batch_size(generator_file, split, tmp_path, monkeypatch):
    from CDTG.model import Generator
    argv = ["--ckpt", generator_file, "--workers", "1", "--device", "cpu", "--batch-size", "4",
            "--n-per-class", "3", "--classes", str(split["tail"][0]), "--output-dir", tmp_path / "gen"]

    def failing(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    monkeypatch.setattr(Generator, "forward", failing)
    proc = run_main(generate, "cdtg_generate", *argv, check=False)
    assert_one_line_error(proc, "out of GPU memory in cdtg_generate (generation, --batch-size 4); run the "
                                "same command with --batch-size 2")
    monkeypatch.undo()
    run_main(generate, "cdtg_generate", *argv[:7], "2", *argv[8:])  # what the line says
    assert len(os.listdir(tmp_path / "gen" / str(split["tail"][0]))) == 3


def test_a_folder_is_continued_only_from_the_same_generator_file(generator_file, split, tmp_path):
    # its paths are relative to it
    weights = os.path.join(os.path.dirname(generator_file), "generator_copy.pt")
    ck = torch.load(generator_file, weights_only=False)
    torch.save(ck, weights)
    argv = ["--ckpt", weights, "--workers", "1", "--device", "cpu", "--n-per-class", "1", "--classes",
            str(split["tail"][0]), "--output-dir", tmp_path / "gen"]
    run_main(generate, "cdtg_generate", *argv)
    assert "is finished (manifest.json)" in run_main(generate, "cdtg_generate", *argv).stdout
    torch.save({**ck, "meta": {**ck["meta"], "iteration": 99}}, weights)  # retrained under the same name
    proc = run_main(generate, "cdtg_generate", *argv, check=False)
    assert_one_line_error(proc, f"{weights} has changed since {tmp_path / 'gen'} was started from it",
                          "choose another --name or --output-dir")


def test_evaluate_prints_diversity_as_a_share_of_real_and_warns_under_a_third():
    row = {"class_id": 7, "name": "bridge", "tail_model_consistency": 0.5, "classifier_consistency": 0.25,
           "feature_diversity": 3.0, "real_feature_diversity": 12.0}
    lines = evaluate.class_report(row)
    assert lines[0] == "  7 bridge: tail model 50.0%, classifier 25.0%, feature diversity 25% of real"
    assert lines[1] == ("  warning: 7 bridge: generated images nearly alike (feature diversity 25% of the "
                        "real images', under a third): the generator collapsed on this class")
    assert len(evaluate.class_report(dict(row, feature_diversity=4.0))) == 1  # a third exactly: no warning
    assert evaluate.class_report({k: v for k, v in row.items() if "diversity" not in k}) == [
        "  7 bridge: tail model 50.0%, classifier 25.0%"]  # no classifier features: no share, no warning


# ---------------------------------------------------------------------------------------- Inception FID / KID


def offline(*args, **kwargs):
    from urllib.error import URLError
    raise URLError("[Errno -2] Name or service not known")


def test_inception_distances_are_the_usual_formulas():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(40, 3)) * 1.5 + 0.5
    d = quality.inception_distances(x, y, subsets=3, subset_size=1000)
    assert d["fid"] == pytest.approx(frechet_distance(x, y), rel=1e-6)  # our own FID, written apart
    # the subset size capped at 40 = both whole sets: every subset is the same, the std is 0
    assert d["kid"] == pytest.approx(kernel_inception_distance(x, y, 1, 40)[0], rel=1e-6)
    assert d["kid_std"] == pytest.approx(0, abs=1e-12)
    # shifting y by 3 in each of the 3 dimensions moves its mean from about 0.5 to 3.5 away: about 3 x 12 more
    far = quality.inception_distances(x, y + 3, subsets=3, subset_size=1000)
    assert far["fid"] - d["fid"] == pytest.approx(36, rel=0.15) and far["kid"] > d["kid"]
    assert far["fid"] == pytest.approx(frechet_distance(x, y + 3), rel=1e-6)
    assert all(np.isnan(v) for v in quality.inception_distances(x[:1], y, 3, 10).values())


def test_inception_weights_offline_is_a_note_and_a_missing_file_an_error(monkeypatch, capsys, tmp_path):
    import torch_fidelity.feature_extractor_inceptionv3 as fe
    monkeypatch.setattr(fe, "load_state_dict_from_url", offline)
    features, note = quality.load_inception(None, "cpu")
    assert features is None and note == (
        "torch-fidelity's InceptionV3 weights could not be downloaded from https://github.com/toshas/"
        "torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth (URLError); pass "
        "that file as --inception-weights")
    assert capsys.readouterr() == ("", "")  # nor torch.hub's "Downloading ..." line
    missing = (r"^--inception-weights .*gone.pth does not exist; pass torch-fidelity's InceptionV3 weights "
               r"file \(weights-inception-2015-12-05-6726825d.pth\)")
    with pytest.raises(UserError, match=missing):
        quality.load_inception(str(tmp_path / "gone.pth"), "cpu")
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match=r"other.pth is not torch-fidelity's InceptionV3 weights \(Runtime"):
        quality.load_inception(str(tmp_path / "other.pth"), "cpu")


def test_inception_sees_uint8_images_at_the_generators_size():
    from PIL import Image
    real = Image.fromarray(np.full((48, 40, 3), [10, 200, 255], np.uint8))  # a real chip of another size
    x = quality.inception_transform(32)(real)
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and x[:, 5, 7].tolist() == [10, 200, 255]


@pytest.mark.slow
def test_inception_weights_from_a_local_file(monkeypatch, tmp_path):
    """torch-fidelity's InceptionV3 with random weights saved to a file (no download): it runs here, on 32 px
    uint8 images, and gives 2048 features per image."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe
    with monkeypatch.context() as m:  # a randomly initialised network, to save its state dict
        m.setattr(fe, "load_state_dict_from_url", lambda *a, **k: None)
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        torch.manual_seed(0)
        random_net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        torch.save(random_net.state_dict(), tmp_path / "w.pth")
    features, note = quality.load_inception(str(tmp_path / "w.pth"), "cpu")
    assert note is None
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = features(images)
    assert out.shape == (2, 2048) and torch.isfinite(out).all() and (out[0] - out[1]).abs().max() > 0


def channel_means(images):
    """A stand-in for InceptionV3 (whose weights cannot be downloaded here), taking what it takes: uint8
    images, at the generator's size (32 px here); features: each channel's mean."""
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (3, 32, 32)
    return images.double().mean((2, 3))


@pytest.mark.slow
def test_evaluate_inception_offline_then_with_a_stand_in(generated, synth_root, split, tmp_path, monkeypatch):
    import shutil

    import torch_fidelity.feature_extractor_inceptionv3 as fe
    from PIL import Image

    from CDTG.manifest import list_entries, read_manifest
    from common.layout import read_classes
    folder = tmp_path / "gen"
    shutil.copytree(generated, folder)
    names = read_classes(synth_root)["names"]
    clf_path = random_classifier_file(tmp_path, names)
    # as many real as generated images per class: each KID subset is the whole sets, no random draw
    m = min(7, *(split["train_counts"][c] for c in (split["tail"][0], split["tail"][-1])))
    argv = ["--generated", folder, "--classifier", clf_path, "--workers", "0", "--device", "cpu",
            "--kid-subsets", "3", "--clip-pretrained", "none", "--max-per-class", m,
            "--fid-backbone", "inception"]

    monkeypatch.setattr(fe, "load_state_dict_from_url", offline)
    proc = run_main(evaluate, "cdtg_evaluate", *argv)
    log, report = proc.stdout.split("Generation quality of")  # the console, then the printed quality.md
    said = [ln for ln in (log + proc.stderr).splitlines() if "Inception" in ln]
    assert said == [("note: FID and KID (Inception) unavailable: torch-fidelity's InceptionV3 weights could "
                     f"not be downloaded from {fe.URL_INCEPTION_V3} (URLError); pass that file as "
                     "--inception-weights; FID_cls is reported instead")]
    assert "Traceback" not in proc.stderr
    res = json.loads((folder / "quality.json").read_text())
    assert res["inception"].startswith("unavailable: torch-fidelity's InceptionV3 weights could not be")
    assert all(c["fid"] >= 0 and "fid_inception" not in c for c in res["per_class"])
    assert "| FID (Inception)" not in report
    assert "FID and KID (Inception): unavailable: torch-fidelity's" in report

    monkeypatch.setattr(evaluate, "load_inception", lambda weights, device: (channel_means, None))
    run_main(evaluate, "cdtg_evaluate", *argv, "--overwrite")
    res = json.loads((folder / "quality.json").read_text())
    manifest = read_manifest(str(folder))
    train = read_list(anno_path(synth_root, "train"), len(names))

    def features(paths):
        return np.stack([np.asarray(Image.open(p).convert("RGB"), np.float64).mean((0, 1)) for p in paths])

    gen_all, real_all = [], []
    for c in res["per_class"]:
        gen = features([p for p, cid in list_entries(str(folder), manifest) if cid == c["class_id"]][:m])
        real = features([os.path.join(synth_root, "train", rel) for rel, cid in train
                         if cid == c["class_id"]][:m])
        assert c["n_generated"] == c["n_real"] == m
        assert c["fid_inception"] == pytest.approx(frechet_distance(gen, real), rel=1e-5)
        assert c["kid_inception"] == pytest.approx(kernel_inception_distance(gen, real, 1, m)[0], rel=1e-5)
        assert c["fid"] != pytest.approx(c["fid_inception"])  # FID_cls stays the classifier's
        gen_all.append(gen)
        real_all.append(real)
    gen_all, real_all = np.concatenate(gen_all), np.concatenate(real_all)
    overall = res["overall"]
    assert overall["pooled_fid_inception"] == pytest.approx(frechet_distance(gen_all, real_all), rel=1e-5)
    assert overall["fid_inception"] == pytest.approx(np.mean([c["fid_inception"] for c in res["per_class"]]))
    md = (folder / "quality.md").read_text()
    assert "| FID_cls | KID_cls x1e3 | FID (Inception) | KID (Inception) x1e3 |" in md
    assert f"FID (Inception) {overall['pooled_fid_inception']:.2f}" in md
