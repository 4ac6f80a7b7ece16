"""DSVA/annotate.py, train.py and test.py end to end on the tiny embedded set with a tiny random CLIP."""
import json
import os

import numpy as np
import open_clip
import pytest
import torch

from common.checkpoint import atomic_save
from common.clip import checkpoint_dict, quiet_open_clip, register_model_config
from common.config import parse_args
from common.errors import UserError
from DSVA import annotate, test as dsva_test, train

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
    assert own["sand"] == ["a photo of something on sand"] and own["several"] == ["a photo of several objects"]
    prompts = {a: ps for a, _, ps in annotate.attribute_prompts(groups, templates, None, own)}
    assert prompts["round"] == ["a photo of something round"]
    prompts = {a: ps for a, _, ps in annotate.attribute_prompts(groups, templates, ["a map of {}", "{} seen"], own)}
    assert prompts["round"] == ["a map of round", "round seen"]
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"groups": {"g": ["x", "y"]}, "templates": ["t {}"], "prompts": {"x": ["px"]}}))
    groups, templates, own = annotate.read_vocabulary(str(vocab))
    assert [ps for _, _, ps in annotate.attribute_prompts(groups, templates, None, own)] == [["px"], ["t y"]]
    with pytest.raises(UserError, match=r"no prompts for attribute\(s\) y;"):
        annotate.attribute_prompts(groups, templates, None, own, require_own=True)
    # the old flag spellings: --templates and --synthetic-prompts on the command line, synthetic_prompts in a config
    parser = annotate.get_args_parser()
    args = parser.parse_args(["--templates", "a {}", "--synthetic-prompts"])
    assert args.templates == ["a {}"] and args.vocabulary_prompts
    config = tmp_path / "c.yaml"
    config.write_text("dsva_annotate:\n  synthetic_prompts: true\n")
    assert parse_args(annotate.get_args_parser(), "dsva_annotate", ["--config", str(config)]).vocabulary_prompts


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
    doc = json.load(open(out / "attributes.json"))
    assert doc["classes"] == classes_json["names"] and doc["attributes"] == classes_json["attributes"]
    assert doc["groups"] == classes_json["attribute_groups"]
    assert doc["recipe"]["prompts"]["sand"] == ["a photo of something on sand"]
    scipy_io = pytest.importorskip("scipy.io")
    assert scipy_io.loadmat(out / "attributes.mat")["att"].shape == (n_attr, 10)  # upstream: attributes x classes
    # the default vocabulary: 100 attributes in the paper's three groups, mean aggregation, z-scores
    out2 = tmp_path / "ann2"
    run(annotate, "dsva_annotate", "--data-root", synth_root, "--clip-model", NAME, "--clip-pretrained",
        tiny_clip, "--images-per-class", "2", "--workers", "0", "--normalize", "zscore", "--output-dir", out2,
               "--device", "cpu")
    doc = json.load(open(out2 / "attributes.json"))
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
    same = ["--data-root", synth_root, "--clip-model", NAME, "--clip-pretrained", tiny_clip, "--images-per-class",
            "2", "--workers", "0", "--normalize", "zscore", "--output-dir", out2, "--device", "cpu"]
    run(annotate, "dsva_annotate", *same)
    assert "already finished with these settings; nothing to do" in capsys.readouterr().out
    (out2 / "attributes.json").unlink()
    run(annotate, "dsva_annotate", *same)
    assert np.array_equal(np.asarray(json.load(open(out2 / "attributes.json"))["matrix"]), m)


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
    res = json.load(open(out / "results.json"))
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
    again = json.load(open(tmp_path / "eval" / "results.json"))
    for branch in ("local", "global"):
        for k in ("zsl", "u", "s", "h"):
            assert again["figures"][branch][k] == pytest.approx(rows[-1][f"test_{branch}_{k}"], abs=1e-12)
    assert (tmp_path / "eval" / "attention_maps.png").is_file()
    # the honest protocol: all seen classes, for the validation run's best epoch + 1 epochs, with its gamma
    final = tmp_path / "final"
    run(train, "dsva", "--data-root", synth_root, "--clip-pretrained", tiny_clip, *FAST, "--pretrain-epoch", "2",
        "--val-run", out, "--output-dir", final)
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
