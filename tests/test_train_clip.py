"""data/synthetic/clip_model.py and train_clip.py on a tiny data set written here in the embedded layout."""
import json
import os

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from common.checkpoint import atomic_save
from common.clip import checkpoint_dict, encode_text_prompts, image_features, load_clip
from common.config import parse_args
from common.errors import UserError
from common.layout import write_layout
from data.synthetic import train_clip
from data.synthetic.clip_model import (
    MODEL_NAME,
    build_model,
    class_attribute_dicts,
    class_prompt,
    described_class_prompt,
    make_caption,
    model_config,
)
from data.synthetic.render import (
    ATTRIBUTE_GROUPS,
    CATALOG,
    attribute_names,
    attribute_prompt,
    class_attribute_matrix,
    render,
)

SEEN, UNSEEN = [0, 1, 2, 4, 5, 7], [3, 6, 8, 9]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """10 classes, 32 px, long-tailed train (6..2 images), 3 test images per class, split 43 = 6 / 4."""
    root = str(tmp_path_factory.mktemp("synth"))
    classes = sorted(CATALOG[:10])
    names = [n for n, _ in classes]
    rng = np.random.default_rng(0)
    entries = {"train": [], "test": []}
    for cid, (_, attrs) in enumerate(classes):
        for split, n in (("train", 6 - cid // 3), ("test", 3)):
            os.makedirs(os.path.join(root, split, str(cid)), exist_ok=True)
            for k in range(n):
                path = os.path.join(root, split, str(cid), f"{k:05d}.jpg")
                Image.fromarray(render(attrs, 32, rng)).save(path)
                entries[split].append((cid, f"{k:05d}.jpg"))
    extra = {"attributes": attribute_names(), "attribute_groups": ATTRIBUTE_GROUPS,
             "class_attributes": class_attribute_matrix(classes).astype(int).tolist(),
             "zsl_splits": {"61": {"seen": SEEN + [3, 6], "unseen": [8, 9]},
                            "43": {"seen": SEEN, "unseen": UNSEEN}},
             "image_size": 32}
    write_layout(root, "SYNTH", names, entries, extra)
    return root


def info_of(root):
    with open(os.path.join(root, "classes.json")) as f:
        return json.load(f)


def test_config_builds_and_round_trips(tmp_path):
    torch.manual_seed(0)
    cfg = model_config()
    model = build_model(cfg).eval().requires_grad_(False)  # frozen as loaded: the same attention kernels
    assert model.visual.image_size == (64, 64) and model.text_projection.shape == (128, 128)
    path = tmp_path / "synth_clip.pt"
    atomic_save(checkpoint_dict(model, MODEL_NAME, cfg), str(path))
    bundle = load_clip(MODEL_NAME, str(path))
    assert bundle.image_size == 64
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    prompts = ["a photo of a storage tank", "a photo of something on sand"]
    with torch.no_grad():
        want_img = image_features(bundle.__class__(MODEL_NAME, model, None, bundle.tokenizer, 64, bundle.mean,
                                                   bundle.std), images)
        want_txt = torch.nn.functional.normalize(model.encode_text(bundle.tokenizer(prompts)), dim=-1)
        assert torch.equal(image_features(bundle, images), want_img)
    assert torch.equal(encode_text_prompts(bundle, prompts), want_txt)


def test_few_steps_lower_the_contrastive_loss(data_root):
    torch.manual_seed(0)
    model = build_model(model_config(image_size=32, width=64, layers=1, embed_dim=32), name="synth-test-tiny")
    images, labels = train_clip.load_images(data_root, "train", SEEN, 32)
    info = info_of(data_root)
    sampler = train_clip.PairSampler(labels, info["names"], class_attribute_dicts(info), "balanced", 0.75, 0)
    idx, captions = sampler.batch(16)
    x = train_clip.to_input(images[idx], open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    tokens = open_clip.get_tokenizer("synth-test-tiny")(captions)
    optimizer = train_clip.make_optimizer(model, 1e-3, 0.1)
    losses = [train_clip.train_step(model, open_clip.ClipLoss(), optimizer, x, tokens) for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0]


def test_unseen_classes_are_absent_from_training_pairs(data_root):
    info = info_of(data_root)
    train_ids, _seen, unseen = train_clip.training_classes(info, "43", all_classes=False)
    assert train_ids == SEEN and unseen == UNSEEN
    images, labels = train_clip.load_images(data_root, "train", train_ids, 32)
    assert set(labels.tolist()) == set(SEEN) and len(images) == len(labels)
    sampler = train_clip.PairSampler(labels, info["names"], class_attribute_dicts(info), "balanced", 0.75, 0)
    unseen_names = [info["names"][c] for c in UNSEEN]
    for _ in range(20):
        idx, captions = sampler.batch(32)
        assert set(labels[idx].tolist()) <= set(SEEN)
        assert not any(n in c for c in captions for n in unseen_names)
    all_ids, _, _ = train_clip.training_classes(info, "43", all_classes=True)
    assert all_ids == list(range(10))
    with pytest.raises(UserError, match="zero-shot split '70'"):
        train_clip.training_classes(info, "70", all_classes=False)


def test_balanced_sampling_draws_classes_uniformly(data_root):
    _, labels = train_clip.load_images(data_root, "train", SEEN, 32)
    info = info_of(data_root)
    sampler = train_clip.PairSampler(labels, info["names"], class_attribute_dicts(info), "balanced", 0.75, 0)
    idx, _ = sampler.batch(6000)
    counts = np.bincount(labels[idx].numpy(), minlength=10)[SEEN]
    assert counts.min() > 850 and counts.max() < 1150


def test_attribute_aucs_are_hand_computed_aucs_ties_included():
    # four test images of classes 0..3 score 0.2, 0.5, 0.5, 0.8 on every attribute prompt (a tie at 0.5)
    image_feats, attr_feats = torch.tensor([[0.2], [0.5], [0.5], [0.8]]), torch.ones(3, 1)
    truth = np.array([[0, 1, 1], [1, 1, 0], [0, 1, 1], [1, 1, 0]])  # class x attribute
    names = ["a", "b", "c"]
    res = train_clip.attribute_aucs(image_feats, torch.arange(4), attr_feats, truth, names)
    # a: positives 0.5, 0.8 against negatives 0.2, 0.5: pairs won 1 + 1/2 (the tie) + 1 + 1 of 4
    # c: positives 0.2, 0.5 against 0.5, 0.8: only the tie, 1/2 of 4; b: every image has it, AUC undefined
    assert res["per_attribute"] == {"a": pytest.approx(3.5 / 4), "c": pytest.approx(0.5 / 4)}
    assert res["undefined"] == ["b"] and res["worst_attribute"] == "c"
    assert res["mean"] == pytest.approx((3.5 + 0.5) / 8) and res["worst"] == pytest.approx(0.125)
    everyone = train_clip.attribute_aucs(image_feats, torch.arange(4), attr_feats, np.ones((4, 3)), names)
    assert everyone["mean"] is None and everyone["undefined"] == ["a", "b", "c"]


def test_captions_and_prompts():
    attrs = {"shape": "round", "colour": "white", "surface": "sand", "size": "several"}
    rng = np.random.default_rng(0)
    named = [make_caption("storage tank", attrs, rng, p_name=1.0) for _ in range(50)]
    assert all("a storage tank" in c for c in named)
    unnamed = [make_caption("storage tank", attrs, rng, p_name=0.0) for _ in range(200)]
    assert not any("storage tank" in c for c in unnamed)
    assert all(any(a in c for a in attrs.values()) or "objects" in c for c in unnamed)
    assert len(set(unnamed)) > 50  # varied
    assert "an airplane" in make_caption("airplane", attrs, rng, p_name=1.0)
    assert class_prompt("airplane") == "a photo of an airplane"
    assert described_class_prompt("storage tank", attrs) == \
        "a photo of several white round objects on sand, a storage tank"
    assert attribute_prompt("sand", "surface") == "a photo of something on sand"
    assert attribute_prompt("several", "size") == "a photo of several objects"


def test_script_end_to_end(data_root, tmp_path, capsys):
    out = tmp_path / "clip" / "synth_clip.pt"
    argv = ["--data-root", data_root, "--out", str(out), "--steps", "3", "--batch-size", "8", "--width", "32",
            "--layers", "1", "--embed-dim", "16", "--warmup", "1", "--log-every", "1"]
    args = parse_args(train_clip.get_args_parser(), "train_clip", argv)
    train_clip.main(args)
    report = json.loads((tmp_path / "clip" / "synth_clip_report.json").read_text())
    assert (tmp_path / "clip" / "synth_clip_report.md").is_file()
    assert report["train_classes"] == [info_of(data_root)["names"][c] for c in SEEN]
    assert set(report["zero_shot"]) == {"name", "described"}
    assert 0 <= report["zero_shot"]["name"]["unseen_among_unseen"] <= 1
    assert 0 <= report["attribute_auc"]["all_test"]["mean"] <= 1
    bundle = load_clip(MODEL_NAME, str(out))
    assert bundle.image_size == 32
    assert image_features(bundle, torch.zeros(1, 3, 32, 32)).shape == (1, 16)
    assert "seen among seen" in capsys.readouterr().out


def test_script_rejects_a_folder_that_is_not_the_embedded_set(tmp_path, capsys):
    write_layout(str(tmp_path), "DIOR", ["a", "b"], {})
    args = parse_args(train_clip.get_args_parser(), "train_clip",
                      ["--data-root", str(tmp_path), "--out", "x.pt"])
    with pytest.raises(SystemExit) as e:
        train_clip.main(args)
    assert e.value.code == 2
    assert "needs the embedded data set" in capsys.readouterr().err


def test_init_continues_an_earlier_fit_on_all_classes(data_root, tmp_path, capsys):
    first, second = tmp_path / "seen.pt", tmp_path / "all.pt"
    small = ["--data-root", data_root, "--steps", "1", "--batch-size", "4", "--width", "32", "--layers", "1",
             "--embed-dim", "16", "--warmup", "1"]
    train_clip.main(parse_args(train_clip.get_args_parser(), "train_clip", small + ["--out", str(first)]))
    # lr 0: the second fit keeps the weights it started from, so equal weights prove that --init loaded them
    train_clip.main(parse_args(train_clip.get_args_parser(), "train_clip",
                               small + ["--out", str(second), "--init", str(first), "--all-classes", "--lr",
                                        "0"]))
    a, b = torch.load(first, weights_only=False), torch.load(second, weights_only=False)
    assert a["model_cfg"] == b["model_cfg"] and a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert b["train_classes"] == list(range(10)) and b["report"]["init"] == str(first)
    assert f"from {first}" in (tmp_path / "all_report.md").read_text()
    capsys.readouterr()
    args = parse_args(train_clip.get_args_parser(), "train_clip",
                      small + ["--out", str(tmp_path / "x.pt"), "--init", str(tmp_path / "missing.pt")])
    with pytest.raises(SystemExit) as e:
        train_clip.main(args)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --init {tmp_path / 'missing.pt'} does not exist; fit a CLIP first (without --init)"]
