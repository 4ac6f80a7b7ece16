"""DSVA/annotate.py, train.py and test.py end to end on the tiny embedded set with a tiny random CLIP."""
import json
import os
import pathlib

import numpy as np
import open_clip
import pytest
import torch

from common.checkpoint import atomic_save
from common.clip import checkpoint_dict, quiet_open_clip, register_model_config
from common.config import parse_args
from common.errors import UserError
from DSVA import annotate, train
from DSVA import test as dsva_test

NAME = "dsva-test-clip"
CFG = {"embed_dim": 16,
       "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
       "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
FAST = ["--split", "43", "--clip-model", NAME, "--ways", "4", "--shots", "2", "--batches-per-epoch", "6",
        "--eval-batch-size", "32", "--workers", "0", "--device", "cpu", "--vis-images", "2"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A randomly initialised tiny open_clip ViT saved as a checkpoint that carries its config."""
    torch.manual_seed(0)
    register_model_config(NAME, CFG)
    with quiet_open_clip():
        model = open_clip.create_model(NAME)
    path = str(tmp_path_factory.mktemp("clip") / "tiny_clip.pt")
    atomic_save(checkpoint_dict(model, NAME, CFG), path)
    return path


def run(module, stage, *argv):
    """A DSVA script's main in this process (spares the interpreter start-up of a subprocess)."""
    module.main(parse_args(module.get_args_parser(), stage, [str(a) for a in argv]))


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_annotate_prompts_come_from_the_vocabulary_or_the_template_flag(synth_root, tmp_path):
    groups, templates, own = annotate.data_vocabulary(synth_root)
    assert own["sand"] == ["a photo of something on sand"]
    assert own["several"] == ["a photo of several objects"]
    prompts = {a: ps for a, _, ps in annotate.attribute_prompts(groups, templates, None, own)}
    assert prompts["round"] == ["a photo of something round"]
    prompts = {a: ps
               for a, _, ps in annotate.attribute_prompts(groups, templates, ["a map of {}", "{} seen"], own)}
    assert prompts["round"] == ["a map of round", "round seen"]
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"groups": {"g": ["x", "y"]}, "templates": ["t {}"],
                                 "prompts": {"x": ["px"]}}))
    groups, templates, own = annotate.read_vocabulary(str(vocab))
    assert [ps for _, _, ps in annotate.attribute_prompts(groups, templates, None, own)] == [["px"], ["t y"]]
    with pytest.raises(UserError, match=r"no prompts for attribute\(s\) y;"):
        annotate.attribute_prompts(groups, templates, None, own, require_own=True)
    # the old flag spellings: --templates and --synthetic-prompts on the command line, synthetic_prompts in a
    # config
    parser = annotate.get_args_parser()
    args = parser.parse_args(["--templates", "a {}", "--synthetic-prompts"])
    assert args.templates == ["a {}"] and args.vocabulary_prompts
    config = tmp_path / "c.yaml"
    config.write_text("dsva_annotate:\n  synthetic_prompts: true\n")
    args = parse_args(annotate.get_args_parser(), "dsva_annotate", ["--config", str(config)])
    assert args.vocabulary_prompts


@pytest.mark.slow
def test_annotate_matrix(synth_root, classes_json, tiny_clip, tmp_path, capsys):
    out = tmp_path / "ann"
    run(annotate, "dsva_annotate", "--data-root", synth_root, "--vocabulary", "data", "--synthetic-prompts",
        "--clip-model", NAME, "--clip-pretrained", tiny_clip, "--images-per-class", "3", "--workers", "0",
        "--output-dir", out, "--device", "cpu")
    matrix = np.load(out / "attributes.npy")
    n_attr = len(classes_json["attributes"])
    assert matrix.shape == (10, n_attr)
    assert np.allclose(matrix.min(0), 0) and np.allclose(matrix.max(0), 1)  # min-max per attribute
    doc = json.loads((out / "attributes.json").read_text())
    assert doc["classes"] == classes_json["names"] and doc["attributes"] == classes_json["attributes"]
    assert doc["groups"] == classes_json["attribute_groups"]
    assert doc["recipe"]["prompts"]["sand"] == ["a photo of something on sand"]
    scipy_io = pytest.importorskip("scipy.io")
    # upstream: attributes x classes
    assert scipy_io.loadmat(out / "attributes.mat")["att"].shape == (n_attr, 10)
    # the default vocabulary: 100 attributes in the paper's three groups, mean aggregation, z-scores
    out2 = tmp_path / "ann2"
    run(annotate, "dsva_annotate", "--data-root", synth_root, "--clip-model", NAME, "--clip-pretrained",
        tiny_clip, "--images-per-class", "2", "--workers", "0", "--normalize", "zscore", "--output-dir", out2,
               "--device", "cpu")
    doc = json.loads((out2 / "attributes.json").read_text())
    assert list(doc["groups"]) == ["functions", "materials", "surface_properties"]
    m = np.asarray(doc["matrix"])
    assert m.shape == (10, 100) and np.allclose(m.mean(0), 0, atol=1e-5)
    with pytest.raises(SystemExit) as stop:
        run(annotate, "dsva_annotate", "--data-root", synth_root, "--clip-model", NAME, "--clip-pretrained",
            tiny_clip, "--output-dir", out2)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "attributes.json already holds the result of other settings: --images-per-class" in err
    assert "--overwrite" in err
    # run again: finished, nothing to do; unfinished (attributes.json is written last), annotated again
    same = ["--data-root", synth_root, "--clip-model", NAME, "--clip-pretrained", tiny_clip,
            "--images-per-class", "2", "--workers", "0", "--normalize", "zscore", "--output-dir", out2,
            "--device", "cpu"]
    run(annotate, "dsva_annotate", *same)
    assert "already finished with these settings; nothing to do" in capsys.readouterr().out
    (out2 / "attributes.json").unlink()
    run(annotate, "dsva_annotate", *same)
    assert np.array_equal(np.asarray(json.loads((out2 / "attributes.json").read_text())["matrix"]), m)


@pytest.mark.slow
def test_train_then_test_reproduces(synth_root, tiny_clip, tmp_path):
    out = tmp_path / "run"
    run(train, "dsva", "--data-root", synth_root, "--clip-pretrained", tiny_clip, *FAST, "--epochs", "4",
        "--pretrain-epoch", "2", "--pretrain-lr", "1e-2", "--classifier-lr", "1e-4", "--val-classes", "2",
        "--val-gamma-grid", "0", "0.5", "0.9", "--output-dir", out)
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert [r["phase"] for r in rows] == ["prototypes"] * 3 + ["all"]
    assert rows[3]["lr"] == pytest.approx(1e-4)
    assert rows[-1]["train_xe"] < rows[0]["train_xe"] and rows[-1]["train_l_xe"] < rows[0]["train_l_xe"]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    res = json.loads((out / "results.json").read_text())
    for key in ("best_test", "last", "best_val"):
        assert {"epoch", "zsl", "u", "s", "h"} <= set(res[key])
    assert res["last"]["epoch"] == 3
    assert res["best_test"]["zsl"] == max(r["test_local_zsl"] for r in rows)
    assert len(res["validation"]["val_classes"]) == 2
    assert {r["gamma"] for r in rows} <= {0, 0.5, 0.9}
    for f in ("model_final.pt", "model_best.pt", "attention_maps.png", "results.md", "ckpt_last.pt"):
        assert (out / f).is_file(), f
    run(dsva_test, "dsva_test", "--weights", out / "model_final.pt", "--workers", "0", "--device", "cpu",
        "--output-dir", tmp_path / "eval")
    again = json.loads((tmp_path / "eval" / "results.json").read_text())
    for branch in ("local", "global"):
        for k in ("zsl", "u", "s", "h"):
            assert again["figures"][branch][k] == pytest.approx(rows[-1][f"test_{branch}_{k}"], abs=1e-12)
    assert (tmp_path / "eval" / "attention_maps.png").is_file()
    # the honest protocol: all seen classes, for the validation run's best epoch + 1 epochs, with its gamma
    final = tmp_path / "final"
    run(train, "dsva", "--data-root", synth_root, "--clip-pretrained", tiny_clip, *FAST,
        "--pretrain-epoch", "2", "--val-run", out, "--output-dir", final)
    best = res["best_val"]
    rows = metrics(final)
    assert len(rows) == best["epoch"] + 1 and all(r["gamma"] == best["gamma"] for r in rows)


@pytest.mark.slow
def test_resume_matches_uninterrupted_run(synth_root, tiny_clip, tmp_path):
    common = ["--data-root", synth_root, "--clip-pretrained", tiny_clip, *FAST, "--epochs", "2",
              "--pretrain-epoch", "0", "--batches-per-epoch", "3", "--no-reset-optimizer"]
    full, part = tmp_path / "full", tmp_path / "part"
    run(train, "dsva", *common, "--output-dir", full)
    run(train, "dsva", *common, "--output-dir", part, "--stop-after", "1")
    assert not (part / "model_final.pt").exists()
    run(train, "dsva", *common, "--output-dir", part, "--resume")
    a = torch.load(full / "model_final.pt")["model"]
    b = torch.load(part / "model_final.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in metrics(full)] == [r["train_loss"] for r in metrics(part)]


def test_train_and_test_take_the_corrupt_image_policy():
    for module, argv in ((train, []), (dsva_test, ["--weights", "w.pt"])):
        assert module.get_args_parser().parse_args(argv).on_corrupt == "skip"
        assert module.get_args_parser().parse_args(argv + ["--on-corrupt", "error"]).on_corrupt == "error"


def altered_test_root(root, tmp_path):
    """A copy of the data root whose test list points every line at another test image (labels kept): the
    test set's images all change, the training images do not."""
    copy = tmp_path / "altered"
    (copy / "anno").mkdir(parents=True)
    for name in os.listdir(root):
        if name != "anno":
            os.symlink(os.path.join(root, name), copy / name)
    for name in os.listdir(os.path.join(root, "anno")):
        lines = pathlib.Path(root, "anno", name).read_text().splitlines()
        if name.endswith("_test.txt"):
            paths = [ln.split(" ")[0] for ln in lines]
            paths = paths[len(paths) // 2:] + paths[:len(paths) // 2]
            lines = [f"{p} {ln.split(' ')[1]}" for p, ln in zip(paths, lines)]
        (copy / "anno" / name).write_text("\n".join(lines) + "\n")
    return copy


@pytest.mark.slow
def test_validation_choice_never_reads_the_test_set(synth_root, tiny_clip, tmp_path):
    """Epochs and gamma come from validation classes carved from the seen classes' training images: altering
    the test images changes the test figures but not the validation curve, the choice or the final run's
    settings."""
    base = ["--clip-pretrained", tiny_clip, *FAST, "--pretrain-epoch", "1", "--pretrain-lr", "1e-2",
            "--setting", "gzsl"]
    argv = [*base, "--epochs", "3", "--val-classes", "2", "--val-gamma-grid", "-0.2", "0", "0.2", "0.5"]
    altered = altered_test_root(synth_root, tmp_path)
    runs = {}
    for name, root in (("plain", synth_root), ("altered", altered)):
        for fold in (0, 1):
            run(train, "dsva", "--data-root", root, *argv, "--val-fold", fold,
                "--output-dir", tmp_path / f"{name}{fold}")
        runs[name] = [json.loads((tmp_path / f"{name}{fold}" / "results.json").read_text())
                      for fold in (0, 1)]
    for plain, alt in zip(runs["plain"], runs["altered"]):
        assert plain["validation_curve"] == alt["validation_curve"]
        assert plain["best_val"]["epoch"] == alt["best_val"]["epoch"]
        assert plain["last"]["zsl"] != alt["last"]["zsl"] or plain["last"]["s"] != alt["last"]["s"]
    a, b = runs["plain"]
    assert a["validation"]["val_classes"] != b["validation"]["val_classes"]  # two folds, two held-out pairs
    names = a["seen"]
    for res in runs["plain"]:
        assert set(res["validation"]["val_classes"]) <= set(names)
        assert len(res["validation_curve"][0]["sweep"]) == 4
    chosen = {}
    for name in runs:
        folds = [tmp_path / f"{name}{fold}" for fold in (0, 1)]
        run(train, "dsva", "--data-root", synth_root, *base, "--val-run", *folds,
            "--output-dir", tmp_path / f"final_{name}")
        rows = metrics(tmp_path / f"final_{name}")
        chosen[name] = (len(rows), rows[-1]["gamma"])
    assert chosen["plain"] == chosen["altered"]
    assert chosen["plain"][0] <= 3 and chosen["plain"][1] in (-0.2, 0, 0.2, 0.5)


def test_selection_averages_the_folds_curves():
    """Per epoch, gamma = the grid value with the best mean validation H; the epoch by mean ZSL or mean H."""
    from DSVA.selection import choose

    def row(epoch, zsl, hs):
        return {"epoch": epoch, "gamma": 0.0, "zsl": zsl, "u": 0, "s": 0, "h": 0,
                "sweep": [{"gamma": g, "zsl": zsl, "u": h, "s": h, "h": h} for g, h in hs]}
    fold_a = [row(0, 0.9, [(-0.1, 0.2), (0.1, 0.6)]), row(1, 0.8, [(-0.1, 0.9), (0.1, 0.1)])]
    fold_b = [row(0, 0.5, [(-0.1, 0.4), (0.1, 0.6)]), row(1, 0.7, [(-0.1, 0.5), (0.1, 0.3)])]
    by_h = choose([fold_a, fold_b], "gzsl")  # epoch 0: mean H 0.3 / 0.6; epoch 1: 0.7 / 0.2
    assert (by_h["epoch"], by_h["gamma"], by_h["folds"]) == (1, -0.1, 2) and by_h["h"] == pytest.approx(0.7)
    by_zsl = choose([fold_a, fold_b], "zsl")  # mean ZSL 0.7 then 0.75
    assert (by_zsl["epoch"], by_zsl["gamma"]) == (1, -0.1)
    assert choose([fold_a], "zsl")["epoch"] == 0 and choose([fold_a], "zsl")["gamma"] == 0.1
    # at least 2 epochs: epoch 0 (1 epoch) is out; more than the runs hold: their last epoch
    assert choose([fold_a], "zsl", min_epochs=2)["epoch"] == 1
    assert choose([fold_a], "zsl", min_epochs=5)["epoch"] == 1
