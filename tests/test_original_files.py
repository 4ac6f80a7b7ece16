"""The original authors' files, rebuilt from the manifests in fixtures/upstream/, work through the project's
entry points and compute what the original classes computed (the references)."""
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest
import torch
from PIL import Image

from Classification import test as classification_test
from common.backbones import build_classifier, load_classifier
from common.errors import UserError
from common.layout import write_layout
from common.original_weights import recognise
from common.part_model import load_part_model
from conftest import REPO, assert_one_line_error
from data.split import make_split
from DSVA.evaluate import zsl_gzsl
from DSVA.model import from_original
from KMDN import test as kmdn_test
from upstream_files import reference, state_dict_of, write_original

# DIOR's class ids in the original's head and tail order (split.json of data/split.py at 40 %)
HEAD = [13, 18, 15, 0, 16, 2, 11, 19]
TAIL = [4, 3, 10, 12, 7, 5, 8, 14, 1, 9, 6, 17]


@contextlib.contextmanager
def threads_of(ref_name):
    """The CPU thread count that a reference was computed with: convolutions split their float sums by thread,
    so a bit-exact comparison needs the same count (otherwise they differ by up to 1e-5)."""
    before = torch.get_num_threads()
    torch.set_num_threads({"classification_ref.pt": 1, "kmdn_ref.pt": 2}.get(ref_name, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dior_root(tmp_path_factory):
    """A 20-class DIOR-like data root: train counts that rank the classes as the original's split, one 16 px
    test image per class, and split.json."""
    root = tmp_path_factory.mktemp("dior") / "processed"
    ranked = HEAD + TAIL
    entries = {"train": [(c, f"{c}_{i}.jpg") for r, c in enumerate(ranked) for i in range(len(ranked) - r)],
               "test": [(c, f"{c}_t.png") for c in range(20)]}
    write_layout(str(root), "DIOR", [f"class{c:02d}" for c in range(20)], entries)
    for c, name in entries["test"]:
        os.makedirs(root / "test" / str(c), exist_ok=True)
        Image.new("RGB", (16, 16), (12 * c, 100, 200 - 5 * c)).save(root / "test" / str(c) / name)
    split = make_split(str(root), 40)
    (root / "split.json").write_text(json.dumps(split))
    assert split["head"] == HEAD and split["tail"] == TAIL
    return root


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("original")
    return {"result": write_original(folder, "classification_result_pth.json", "result.pth"),
            "head": write_original(folder, "kmdn_epoch_pth.json", "UModel_epoch_0.pth", "head"),
            "tail": write_original(folder, "kmdn_epoch_pth.json", "RModel_epoch_0.pth", "tail")}


def assert_rounding_close(actual, expected):
    """Equal within float32 rounding (the reference was computed with other threads and SIMD paths)."""
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def seeded_input(seed):
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def in_process(main, capsys):
    """Run a script's cli-wrapped main in this process; returns what assert_one_line_error reads."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main()
    return types.SimpleNamespace(returncode=exit_info.value.code, stderr=capsys.readouterr().err)


def load_converter():
    spec = importlib.util.spec_from_file_location("convert_original", os.path.join(REPO, "scripts",
                                                                                   "convert_original.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- classifier: result.pth ---

def test_result_pth_logits_equal_the_original(originals, capsys):
    model, meta = load_classifier(originals["result"], 20)
    assert meta["arch"] == "resnet50"  # inferred from the keys (3, 4, 6, 3 bottleneck blocks)
    assert "recognised the original TGN classifier layout" in capsys.readouterr().out
    with torch.no_grad(), threads_of("classification_ref.pt"):
        logits = model.eval()(seeded_input(5))
    assert_rounding_close(logits, reference("classification_ref.pt")["logits"])


def test_result_pth_as_train_py_weights(originals, capsys):
    """Classification/train.py --weights result.pth: build_classifier loads every tensor, the head
    included."""
    model = build_classifier("resnet50", 20, originals["result"])
    out = capsys.readouterr().out
    assert "result.pth: recognised the original TGN classifier layout" in out and "left at init: none" in out
    sd = state_dict_of("classification_result_pth.json", "state_dict")
    assert torch.equal(model.fc.weight, sd["fc.0.weight"]) and torch.equal(model.fc.bias, sd["fc.0.bias"])


@pytest.mark.slow
def test_result_pth_through_test_py_from_inside_classification(originals, dior_root, tmp_path):
    """The README's command: cd Classification && python test.py --weights save_model/result.pth ..."""
    save = tmp_path / "Classification" / "save_model"
    save.mkdir(parents=True)
    os.symlink(originals["result"], save / "result.pth")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, os.path.join(REPO, "Classification", "test.py"), "--weights",
                           "save_model/result.pth", "--data-root", os.path.relpath(dior_root, save.parent),
                           "--img-size", "32", "--workers", "0", "--device", "cpu"],
                          cwd=save.parent, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "save_model/result.pth: recognised the original TGN classifier layout" in proc.stdout
    assert "resnet50, 20 classes; renamed 2 keys" in proc.stdout
    assert (save / "test" / "DIOR" / "results.json").is_file()


@pytest.mark.slow
def test_classifier_conversion_then_test_py(originals, dior_root, tmp_path, capsys):
    convert = load_converter()
    out = tmp_path / "classifier.pt"
    convert.main(convert.get_args_parser().parse_args(
        ["classifier", originals["result"], str(out), "--data-root", str(dior_root)]))
    ck = torch.load(out, weights_only=False)
    assert ck["arch"] == "resnet50" and ck["names"][0] == "class00" and ck["img_size"] == 224
    assert ck["norm"] == "half" and ck["dataset"] == "DIOR" and "fc.weight" in ck["model"]
    capsys.readouterr()
    model, _meta = load_classifier(str(out), 20)
    assert "recognised" not in capsys.readouterr().out  # our own format now
    with torch.no_grad(), threads_of("classification_ref.pt"):
        logits = model.eval()(seeded_input(5))
    assert_rounding_close(logits, reference("classification_ref.pt")["logits"])
    argv = ["classifier", originals["result"], str(out), "--data-root", str(dior_root)]
    again = in_process(lambda: convert.main(convert.get_args_parser().parse_args(argv)), capsys)
    assert_one_line_error(again, f"{out} exists", "--overwrite")


def test_cdtg_conversion_is_handed_to_cdtg_original(tmp_path, monkeypatch, capsys):
    convert = load_converter()
    argv = ["cdtg", "200000.pt", str(tmp_path / "generator.pt"), "--data-root", "data/dior/processed"]
    calls = []
    monkeypatch.setitem(sys.modules, "CDTG.original", types.SimpleNamespace(
        convert_to_project=lambda *a: calls.append(a)))
    convert.main(convert.get_args_parser().parse_args(argv))
    assert calls == [("200000.pt", str(tmp_path / "generator.pt"), "data/dior/processed")]
    monkeypatch.setitem(sys.modules, "CDTG.original", None)  # a checkout without CDTG/original.py
    proc = in_process(lambda: convert.main(convert.get_args_parser().parse_args(argv)), capsys)
    assert_one_line_error(proc, "this checkout has no CDTG/original.py")


# --- KMDN: UModel_epoch_0.pth / RModel_epoch_0.pth ---

@pytest.mark.slow
def test_kmdn_files_logits_and_layer3_equal_the_original(originals, dior_root):
    split = json.loads((dior_root / "split.json").read_text())
    ref = reference("kmdn_ref.pt")
    x = seeded_input(30)
    for part in ("head", "tail"):
        model, meta = load_part_model(originals[part], split=split)
        assert meta["part"] == part and meta["classes"] == split[part]
        assert meta["names"] == [split["names"][c] for c in split[part]]
        with torch.no_grad(), threads_of("kmdn_ref.pt"):
            logits, feat3 = model(x)
        assert_rounding_close(logits, ref[part]["logits"])
        assert_rounding_close(feat3[:, :16], ref[part]["layer3_first16ch"])


@pytest.mark.slow
def test_kmdn_test_py_takes_the_original_files(originals, dior_root, tmp_path, capsys):
    kmdn_test.main(kmdn_test.parse_args(kmdn_test.get_args_parser(), "kmdn_test", [
        "--weights", originals["head"], originals["tail"], "--data-root", str(dior_root), "--workers", "0",
        "--device", "cpu", "--output-dir", str(tmp_path)]))
    out = capsys.readouterr().out
    assert "UModel_epoch_0.pth: recognised the original TGN KMDN layout" in out
    assert f"head model, classes {HEAD} of split.json in that order" in out
    assert "RModel_epoch_0.pth: tail model, 12 classes" in out
    assert (tmp_path / "RModel_epoch_0" / "results.json").is_file()


@pytest.mark.slow
def test_kmdn_conversion_then_test_py(originals, dior_root, tmp_path, capsys):
    convert = load_converter()
    out = tmp_path / "tail_model.pt"
    convert.main(convert.get_args_parser().parse_args(
        ["kmdn", originals["tail"], str(out), "--data-root", str(dior_root)]))
    model, meta = load_part_model(str(out))  # our format: no split needed any more
    assert meta["part"] == "tail" and meta["classes"] == TAIL and meta["img_size"] == 224
    with torch.no_grad(), threads_of("kmdn_ref.pt"):
        logits, _ = model(seeded_input(30))
    assert_rounding_close(logits, reference("kmdn_ref.pt")["tail"]["logits"])
    capsys.readouterr()
    kmdn_test.main(kmdn_test.parse_args(kmdn_test.get_args_parser(), "kmdn_test", [
        "--weights", str(out), "--data-root", str(dior_root), "--workers", "0", "--device", "cpu"]))
    assert "tail_model.pt: tail model, 12 classes" in capsys.readouterr().out


@pytest.mark.slow
def test_distill_and_cdtg_loaders_take_the_original_files(originals, dior_root):
    from CDTG.conditioning import load_tail_model
    from common.part_model import read_part_file
    split = json.loads((dior_root / "split.json").read_text())
    ck = read_part_file(originals["head"], "--head-init file", split=split, part="head")
    assert ck["classes"] == HEAD and "layer1.0.downsample.0.weight" in ck["model"]
    tail = load_tail_model(originals["tail"], split=split)
    assert tail.meta["classes"] == TAIL and tail.input_size == 224


# --- bad input: one line each ---

@pytest.mark.slow
def test_class_count_that_fits_neither_part(originals, dior_root, tmp_path, capsys):
    sd = torch.load(originals["tail"])
    sd["fc.weight"], sd["fc.bias"] = sd["fc.weight"][:5], sd["fc.bias"][:5]
    torch.save(sd, tmp_path / "RModel_epoch_5.pth")
    argv = ["--weights", str(tmp_path / "RModel_epoch_5.pth"), "--data-root", str(dior_root)]
    proc = in_process(lambda: kmdn_test.main(kmdn_test.parse_args(kmdn_test.get_args_parser(), "kmdn_test",
                                                                  argv)),
                      capsys)
    assert_one_line_error(proc, "has 5 classes, which fits neither part of split.json (head 8, tail 12)")
    split = json.loads((dior_root / "split.json").read_text())
    with pytest.raises(UserError, match="has 12 classes but split.json's head part has 8"):
        load_part_model(originals["tail"], split=split, part="head")
    even = {**split, "head": TAIL, "tail": HEAD + [1, 9, 6, 17]}  # 12 and 12: the class count cannot tell
    with pytest.raises(UserError, match="fits both parts of split.json .*; pass --part head or --part tail"):
        load_part_model(originals["tail"], split=even)
    _, meta = load_part_model(originals["tail"], split=even, part="tail")
    assert meta["classes"] == even["tail"]


def test_unknown_layout_names_the_nearest_and_the_keys(originals, dior_root, tmp_path, capsys):
    sd = {k.replace("layer4.2.", "layer4.x."): v for k, v in torch.load(originals["tail"]).items()}
    torch.save(sd, tmp_path / "odd.pth")
    argv = ["--weights", str(tmp_path / "odd.pth"), "--data-root", str(dior_root), "--device", "cpu"]
    proc = in_process(lambda: classification_test.main(classification_test.parse_args(
        classification_test.get_args_parser(), "classification_test", argv)), capsys)
    assert_one_line_error(proc, "odd.pth is a state dict of none of the known layouts; nearest: the original "
                                "TGN KMDN layout", "of a resnet50, but 36 keys differ (missing "
                                                   "layer4.2.conv1.weight")
    with pytest.raises(UserError, match="of a resnet18, but"):
        recognise(sd, "odd.pth", arch="resnet18")


# --- DSVA: the original head names on a Hugging Face CLIPModel ViT-B/32 ---

@pytest.mark.slow
def test_dsva_from_original_names_matches_the_reference():
    ref = reference("dsva_ref.pt")
    groups = {"functions": list(range(40)), "materials": list(range(40, 70)),
              "surface_properties": list(range(70, 98))}
    model = from_original(state_dict_of("dsva_clip_proto_vitb32.json", "dsva_head"),
                          state_dict_of("dsva_clip_proto_vitb32.json", "clip_model_hf"), groups=groups).eval()
    g = torch.Generator().manual_seed(70)
    x = torch.randn(2, 3, 224, 224, generator=g)
    att = torch.rand(98, 12, generator=g)
    with torch.no_grad():
        off, on = model(x, att), model(x, att, proposal=True)
    # the original's class outputs are softmaxes; ours are logits (the softmax belongs to loss and evaluation)
    ours = {"off": {"output_final": off["global"].softmax(1), "pre_attri_layer4": off["local_attr"],
                    "pre_attri_final": off["global_attr"], "attention_layer4": off["attention"],
                    "pre_class_layer4": off["local"].softmax(1)},
            "on": {"output_final": on["global"].softmax(1), "pre_class_proposal": on["proposal"].softmax(1)}}
    diffs = {f"{branch}.{k}": (v - ref[branch][k]).abs().max().item() for branch in ours
             for k, v in ours[branch].items()}
    print(diffs)
    assert max(diffs.values()) <= 1e-4, diffs


def test_dsva_figures_on_the_stored_scores_for_each_gamma():
    ev = reference("dsva_ref.pt")["eval"]
    assert len(ev["results"]) == 4
    for gamma, want in ev["results"].items():
        got = zsl_gzsl(ev["logits_unseen"], ev["y_unseen"].numpy(), ev["logits_seen"], ev["y_seen"].numpy(),
                       ev["seen"], ev["unseen"], float(gamma))
        assert got == want, gamma
