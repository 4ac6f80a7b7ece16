"""Per-stage user mistakes: each gives exit 2, one `error: ...` line, no traceback, and leaves the disk as it
was (no run folder, no half-written data set, no replaced split or report)."""
import hashlib
import json
import os
import pathlib
import shutil
import sys
import types

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from common import backbones
from common import clip as clip_lib
from common.config import parse_args
from common.errors import UserError
from conftest import assert_one_line_error, run_main, run_script, tree


def call(module, stage, *argv):
    """A script's main in this process, as a CompletedProcess-like object (returncode, stdout, stderr)."""
    return run_main(module, stage, *argv, check=False)


@pytest.fixture
def data_copy(synth_root, tmp_path):
    """A private copy of the tiny data root, for tests that write into it."""
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    return root


# ------------------------------------------------------------------- group 7: outputs never replaced silently

@pytest.mark.slow
def test_split_json_and_test_report_are_not_replaced(data_copy, tmp_path):
    before = (data_copy / "split.json").read_bytes()
    proc = run_script("data/split.py", "--data-root", str(data_copy), "--head-percent", "30", check=False)
    assert_one_line_error(proc, f"{data_copy / 'split.json'} exists and holds another split", "--overwrite")
    assert (data_copy / "split.json").read_bytes() == before
    run_script("data/split.py", "--data-root", str(data_copy), "--head-percent", "40")  # the same split: fine
    run_script("data/split.py", "--data-root", str(data_copy), "--head-percent", "30", "--overwrite")
    assert len(json.loads((data_copy / "split.json").read_text())["head"]) == 3

    from Classification import test as cls_test
    weights = tmp_path / "model_final.pt"
    torch.save({"model": backbones.build_classifier("resnet18", 10, "none", verbose=False).state_dict(),
                "arch": "resnet18", "img_size": 32}, weights)
    report = tmp_path / "report"
    report.mkdir()
    (report / "results.json").write_text('{"oa": 0.5}')
    proc = call(cls_test, "classification_test", "--weights", weights, "--data-root", data_copy,
                "--output-dir", report, "--workers", "0", "--device", "cpu")
    assert_one_line_error(proc, f"{report}/results.json already exists (its settings are not recorded in "
                                f"it); pass --overwrite")
    assert tree(report) == {"results.json": hashlib.sha1(b'{"oa": 0.5}').hexdigest()}


# ------------------------------------------------------------------------- group 9: converters

def jpeg(path, size=(12, 8)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, (90, 0, 0)).save(path)


def test_converters_leave_nothing_at_out_on_failure_and_count_ignored_entries(tmp_path):
    from data.dior import prepare as dior
    from data.fgsc23 import prepare as fgsc23
    raw = tmp_path / "fgsc"
    jpeg(raw / "0-carrier" / "a.jpg")
    jpeg(raw / "0-carrier" / "b.jpg")
    jpeg(raw / "1" / "c.jpg")
    (raw / "1" / "z_corrupt.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    proc = call(fgsc23, "prepare_fgsc23", "--raw", raw, "--output-dir", out, "--num-classes", 2)
    assert_one_line_error(proc, "z_corrupt.jpg is not a readable image")
    assert sorted(os.listdir(tmp_path)) == ["fgsc"]  # no --out, no hidden staging folder

    out.mkdir()  # an existing data set stays as it was under --overwrite when the conversion fails
    (out / "classes.json").write_text("{}")
    proc = call(fgsc23, "prepare_fgsc23", "--raw", raw, "--output-dir", out, "--num-classes", 2,
                "--overwrite")
    assert proc.returncode == 2 and tree(out) == {"classes.json": hashlib.sha1(b"{}").hexdigest()}
    assert sorted(os.listdir(tmp_path)) == ["fgsc", "out"]

    os.remove(raw / "1" / "z_corrupt.jpg")
    (raw / "0-carrier" / "Thumbs.db").write_bytes(b"x")
    (raw / "notes.txt").write_text("x")
    os.makedirs(raw / "2")
    proc = call(fgsc23, "prepare_fgsc23", "--raw", raw, "--output-dir", out, "--num-classes", 3,
                "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert f"not a class folder: 1 (e.g. {raw / 'notes.txt'})" in proc.stdout
    assert f"not an image file: 1 (e.g. {raw / '0-carrier' / 'Thumbs.db'})" in proc.stdout
    assert f"empty class folders (no image): 1: {raw / '2'}" in proc.stdout
    assert json.loads((out / "classes.json").read_text())["names"] == ["carrier", "class_1", "class_2"]
    assert sorted(os.listdir(tmp_path)) == ["fgsc", "out"]

    dior_raw = tmp_path / "dior"  # a DIOR image that cannot be read: no empty --out left behind
    for sub in ("JPEGImages-trainval", "JPEGImages-test", "Annotations", "ImageSets/Main"):
        os.makedirs(dior_raw / sub)
    (dior_raw / "JPEGImages-trainval" / "00001.jpg").write_bytes(b"broken")
    (dior_raw / "Annotations" / "00001.xml").write_text(
        "<annotation><object><name>ship</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>"
        "</bndbox></object></annotation>")
    (dior_raw / "ImageSets" / "Main" / "train.txt").write_text("00001\n")
    (dior_raw / "ImageSets" / "Main" / "val.txt").write_text("")
    (dior_raw / "ImageSets" / "Main" / "test.txt").write_text("")
    proc = call(dior, "prepare_dior", "--raw", dior_raw, "--output-dir", tmp_path / "dior_out")
    assert_one_line_error(proc, "00001.jpg is not a readable image")
    assert sorted(os.listdir(tmp_path)) == ["dior", "fgsc", "out"]


# ------------------------------------------------------------------------- group 10: smaller ones

def test_distill_finds_stage1_models_with_a_trailing_slash(synth_root, tmp_path):
    from KMDN import distill
    split = json.loads(pathlib.Path(synth_root, "split.json").read_text())
    args = types.SimpleNamespace(head_init=None, tail_init=None)
    with pytest.raises(UserError,
                       match=f"stage-1 head model {tmp_path / 'x' / 'head' / 'model_final.pt'} does"):
        distill.load_stage1(args, split, str(tmp_path / "x" / "distill") + "/")


@pytest.mark.slow
def test_load_matching_names_unused_tensors(tmp_path, capsys):
    path = tmp_path / "r34.pt"
    torch.save(backbones.build_classifier("resnet34", 10, "none", verbose=False).state_dict(), path)
    capsys.readouterr()
    backbones.build_classifier("resnet18", 10, str(path))
    line = capsys.readouterr().out.strip()
    r18 = set(backbones.build_classifier("resnet18", 10, "none", verbose=False).state_dict())
    r34 = set(torch.load(path))
    unused = sorted(r34 - r18)
    assert line.startswith(f"loaded {len(r18)} tensors from {path}; left at init: none; unused from the "
                           f"file: {len(unused)}: {', '.join(unused[:8])}, ...")
    assert len(unused) == 96


def test_imagenet_weights_are_v1_and_enum_names_are_accepted(monkeypatch):
    asked = []
    real = backbones.models.get_model
    monkeypatch.setattr(backbones.models, "get_model", lambda name, weights=None: asked.append(weights) or
                        real(name, weights=None))
    backbones.build_classifier("resnet18", 3, "imagenet", verbose=False)
    backbones.build_classifier("resnet18", 3, "IMAGENET1K_V1", verbose=False)
    assert [str(w) for w in asked] == ["ResNet18_Weights.IMAGENET1K_V1"] * 2
    asked.clear()
    backbones.build_classifier("resnet50", 3, "IMAGENET1K_V2", verbose=False)
    assert [str(w) for w in asked] == ["ResNet50_Weights.IMAGENET1K_V2"]
    with pytest.raises(UserError, match="resnet18 has no torchvision weights 'IMAGENET1K_V9'; choose one of "
                                        "IMAGENET1K_V1, DEFAULT"):
        backbones.build_classifier("resnet18", 3, "IMAGENET1K_V9")


def fake_generated(folder, synth_root, class_id=2, n=3):
    names = json.loads(pathlib.Path(synth_root, "classes.json").read_text())["names"]
    from CDTG.manifest import MANIFEST_FORMAT
    for i in range(n):
        jpeg(os.path.join(folder, str(class_id), f"{i:05d}.jpg"))
    manifest = {"format": MANIFEST_FORMAT, "dataset": "SYNTH", "data_root": os.path.abspath(synth_root),
                "classes": [{"class_id": class_id, "name": names[class_id], "folder": str(class_id),
                             "count": n}]}
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def test_expand_and_generate_input_checks(synth_root, tmp_path):
    from CDTG import expand, generate
    gen = tmp_path / "gen"
    fake_generated(gen, synth_root)
    listing = tmp_path / "list.txt"
    proc = call(expand, "cdtg_expand", "--generated", gen, str(gen) + "/", "--out", listing)
    assert proc.returncode == 0, proc.stderr
    assert f"{gen}/ is {gen} given again; listed once" in proc.stdout
    assert len(listing.read_text().splitlines()) == 3

    proc = call(expand, "cdtg_expand", "--generated", gen, "--out", tmp_path / "other.txt", "--n-per-class",
                -1)
    assert_one_line_error(proc, "--n-per-class must be a positive number of images, got -1")
    assert not (tmp_path / "other.txt").exists()

    (gen / "manifest.json").write_text("[1, 2]")
    proc = call(expand, "cdtg_expand", "--generated", gen, "--out", tmp_path / "other.txt")
    assert_one_line_error(proc, f"{gen / 'manifest.json'} is not a CDTG generation manifest", "format 'list'")
    (gen / "manifest.json").write_text("{")
    proc = call(expand, "cdtg_expand", "--generated", gen, "--out", tmp_path / "other.txt")
    assert_one_line_error(proc, f"manifest {gen / 'manifest.json'} is not valid JSON")

    names = json.loads(pathlib.Path(synth_root, "classes.json").read_text())["names"]
    ckpt = tmp_path / "generator.pt"
    torch.save({"g_ema": {}, "P_ema": {}, "meta": {"format": "cdtg-generator-v1", "dataset": "SYNTH",
                                                   "data_root": synth_root, "classes": [2, 5],
                                                   "names": [names[2], "no-such-name"]}}, ckpt)
    proc = call(generate, "cdtg_generate", "--ckpt", ckpt, "--output-dir", tmp_path / "g", "--device", "cpu")
    assert_one_line_error(proc, f"data root {synth_root} has '{names[5]}' as class 5, but the generator's "
                                "class 5 is 'no-such-name'; pass the data root it was trained on "
                                "(--data-root)")
    proc = call(generate, "cdtg_generate", "--ckpt", ckpt, "--output-dir", tmp_path / "g", "--n-per-class",
                -1)
    assert_one_line_error(proc, "--n-per-class must be positive, got -1")
    assert not (tmp_path / "g").exists()


def test_dsva_test_moves_stored_paths_with_a_new_data_root(tmp_path):
    from DSVA import test as dsva_test
    old, new = str(tmp_path / "old"), str(tmp_path / "new")
    stored = {"dataset": "rssdivcs", "data_root": old, "images_mat": f"{old}/files/43_images.mat",
              "split_file": "/elsewhere/split.json", "image_root": old}
    args = parse_args(dsva_test.get_args_parser(), "dsva_test", ["--weights", "w.pt", "--data-root", new])
    opts = dsva_test.data_options(args, stored)
    assert (opts.data_root, opts.images_mat, opts.image_root) == (new, f"{new}/files/43_images.mat", new)
    assert opts.split_file == "/elsewhere/split.json"
    args = parse_args(dsva_test.get_args_parser(), "dsva_test", ["--weights", "w.pt"])
    assert dsva_test.data_options(args, stored).images_mat == f"{old}/files/43_images.mat"


@pytest.mark.slow
def test_clip_schema_names_and_damaged_files(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=f"CLIP model local-dir:{tmp_path}/none: "
                                        f"{tmp_path}/none/open_clip_config.json does not exist"):
        clip_lib.load_clip(f"local-dir:{tmp_path}/none")
    folder = tmp_path / "oc"
    folder.mkdir()
    config = {"model_cfg": open_clip.get_model_config("RN50")}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.save({"w": torch.zeros(1000)}, folder / "full.bin")
    (folder / "open_clip_pytorch_model.bin").write_bytes((folder / "full.bin").read_bytes()[:600])
    os.remove(folder / "full.bin")
    with pytest.raises(UserError, match=f"the weights of local-dir:{folder} in "
                                        f"{folder}/open_clip_pytorch_model.bin cannot be read .*damaged or "
                                        "truncated: delete it"):
        clip_lib.load_clip(f"local-dir:{folder}")

    def offline(*args, **kwargs):
        raise FileNotFoundError("Failed to download file (open_clip_config.json) for org/model")

    monkeypatch.setattr(clip_lib, "download_pretrained_from_hf", offline)
    with pytest.raises(UserError,
                       match="could not download CLIP model hf-hub:org/model from the Hugging Face Hub"):
        clip_lib.load_clip("hf-hub:org/model")

    damaged = tmp_path / "cache.bin"
    damaged.write_bytes(b"\x00" * 10)
    monkeypatch.setattr(open_clip, "download_pretrained", lambda *a, **k: str(damaged))
    with pytest.raises(UserError, match=f"the cached RN50 'openai' weights in {damaged} cannot be read"):
        clip_lib.load_clip("RN50", "openai")

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(open_clip, "create_model", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):  # not disguised as a download or file problem
        clip_lib.load_clip("RN50", "openai")


# ------------------------------------------------------------------ groups 5 and 8: checked before any folder

def test_bad_values_fail_before_a_run_folder(synth_root, tmp_path):
    from CDTG import train as cdtg_train
    from Classification import train as cls_train
    from KMDN import train as kmdn_train
    out = tmp_path / "run"
    proc = call(cls_train, "classification", "--data-root", synth_root, "--output-dir", out, "--model",
                "resnet19", "--weights", "none", "--workers", "0", "--device", "cpu")
    assert_one_line_error(proc, "unknown model 'resnet19'")
    proc = call(kmdn_train, "kmdn", "--part", "head", "--data-root", synth_root, "--output-dir", out,
                "--model", "vgg11", "--weights", "none", "--workers", "0", "--device", "cpu")
    assert_one_line_error(proc, "unknown model 'vgg11' for a feature ResNet")
    proc = call(cdtg_train, "cdtg", "--data-root", synth_root, "--tail-model", "t.pt", "--output-dir", out,
                "--size", "48", "--device", "cpu")
    assert_one_line_error(proc, "image size 48 is not supported; use a power of two")
    assert not out.exists()


def test_dsva_bad_values_and_attributes(synth_root, tmp_path):
    from DSVA import annotate, train
    out = tmp_path / "run"
    proc = call(annotate, "dsva_annotate", "--data-root", synth_root, "--output-dir", out,
                "--images-per-class", 0)
    assert_one_line_error(proc, "--images-per-class must be at least 1")
    common = ["--data-root", synth_root, "--split", "43", "--output-dir", out, "--device", "cpu",
              "--workers", "0"]
    proc = call(train, "dsva", *common, "--ways", 20)
    assert_one_line_error(proc, "--ways 20 is more than the")
    assert_one_line_error(call(train, "dsva", *common, "--ways", 2, "--shots", 0),
                          "--shots must be at least 1, got 0")
    names = json.loads(pathlib.Path(synth_root, "classes.json").read_text())["names"]
    attributes = tmp_path / "attributes.json"
    matrix = np.random.default_rng(0).random((len(names), 4)).round(3).tolist()
    for doc, message in (
            ({"classes": names, "attributes": ["a", "b", "c"], "matrix": matrix},
             f"{attributes} names 3 attributes but its matrix has 4 columns"),
            ({"classes": names, "attributes": list("abcd"), "groups": {"g": [0, 7]}, "matrix": matrix},
             f"{attributes}: attribute group 'g' holds index 7, outside the matrix's 4 columns")):
        attributes.write_text(json.dumps(doc))
        for extra in ([], ["--regular", "0.1"]):
            assert_one_line_error(call(train, "dsva", *common, "--attributes", attributes, *extra), message)
    attributes.write_text("{'matrix':")
    assert_one_line_error(call(train, "dsva", *common, "--attributes", attributes),
                          f"attributes file {attributes} is not valid JSON")
    assert not out.exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
