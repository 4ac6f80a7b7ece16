"""DSVA's data: RSSDIVCS .mat reading (1-based indices, re-rooted paths), splits, the episodic sampler,
attribute files, transforms, and one-line errors for bad input."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import UserError
from conftest import assert_one_line_error, run_main, run_script
from DSVA.attributes import load_attributes
from DSVA.episodes import EpisodeSampler, dsva_transform
from DSVA.sources import carve_validation, load_folders, load_layout, load_rssdivcs, read_split_file

scipy_io = pytest.importorskip("scipy.io")

NAMES = ["airport", "beach", "forest", "harbor"]  # class 3 (harbor) is unseen


def cell(strings):
    arr = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        arr[i, 0] = np.array([s])
    return arr


@pytest.fixture
def rssdivcs(tmp_path):
    """A 4-class, 3-images-per-class RSSDIVCS release whose .mat paths point to the authors' machine."""
    root = tmp_path / "RSSDIVCS_here"
    os.makedirs(root / "files")
    paths, labels = [], []
    for c, name in enumerate(NAMES):
        for i in range(3):
            rel = f"images/{name}/{name}_{i}.jpg"
            os.makedirs(root / "images" / name, exist_ok=True)
            Image.new("RGB", (16, 16), (40 * c, 10 * i, 0)).save(root / rel)
            paths.append(f"/home/author/ISPRS/RSSDIVCS/{rel}")
            labels.append(c + 1)  # 1-based
    n = len(paths)
    images = {"image_files": cell(paths), "labels": np.array(labels)[:, None], "features": np.zeros((4, n))}
    scipy_io.savemat(root / "files" / "43_images.mat", images)
    seen_idx = [i for i in range(n) if labels[i] <= 3]
    train = [i + 1 for i in seen_idx if i % 3 < 2]  # 1-based
    test_seen = [i + 1 for i in seen_idx if i % 3 == 2]
    test_unseen = [i + 1 for i in range(n) if labels[i] == 4]
    att = np.arange(5 * 4, dtype=np.float64).reshape(5, 4)  # attributes x classes, as upstream
    scipy_io.savemat(root / "files" / "ann_attr_finetune_43_splits.mat", {
        "train_zsl_loc_0": np.array(train)[:, None], "train_gzsl_loc_0": np.array(train)[:, None],
        "test_seen_loc_0": np.array(test_seen)[:, None], "test_unseen_loc_0": np.array(test_unseen)[:, None],
        "att": att, "allclasses_names": cell(NAMES)})
    with open(root / "files" / "attri_group_3.json", "w") as f:
        json.dump({"functions": [0, 1], "materials": [2], "surface_properties": [3, 4]}, f)
    return root, att


def test_rssdivcs_mat_reading(rssdivcs):
    root, att = rssdivcs
    data = load_rssdivcs(str(root), "43")
    assert data.names == NAMES
    assert data.seen == [0, 1, 2] and data.unseen == [3]
    assert len(data.train) == 6 and len(data.test_seen) == 3 and len(data.test_unseen) == 3
    assert data.train[0] == (str(root / "images/airport/airport_0.jpg"), 0)  # re-rooted, 0-based label
    assert data.test_seen[0] == (str(root / "images/airport/airport_2.jpg"), 0)
    assert all(y == 3 for _, y in data.test_unseen)
    assert np.array_equal(data.attributes, att.T)
    assert "shares 0 of 3" in data.notes[0]


def test_rssdivcs_bad_files(rssdivcs, tmp_path):
    root, _ = rssdivcs
    with pytest.raises(UserError, match="does not exist"):
        load_rssdivcs(str(tmp_path / "nowhere"), "43")
    with pytest.raises(UserError, match="do not exist"):
        load_rssdivcs(str(root), "43", image_root=str(tmp_path / "elsewhere"))
    path = root / "files" / "ann_attr_finetune_43_splits.mat"
    mat = {k: v for k, v in scipy_io.loadmat(path).items() if not k.startswith("__")}
    mat["test_unseen_loc_0"] = np.array([[0]])  # 0-based by mistake
    scipy_io.savemat(path, mat)
    with pytest.raises(UserError, match="1-based"):
        load_rssdivcs(str(root), "43")


def test_split_file_errors(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"seen": ["airport", "beach"], "unseen": ["volcano"]}))
    with pytest.raises(UserError, match="unknown classes 'volcano'"):
        read_split_file(str(path), NAMES)
    path.write_text(json.dumps({"seen": ["airport", 1], "unseen": ["beach"]}))
    with pytest.raises(UserError, match="both seen and unseen"):
        read_split_file(str(path), NAMES)
    path.write_text(json.dumps({"seen": ["airport", 2], "unseen": ["harbor"]}))
    assert read_split_file(str(path), NAMES) == ([0, 2], [3])


def test_layout_split_and_sampler(synth_root, classes_json):
    split = classes_json["zsl_splits"]["43"]
    data = load_layout(synth_root, "43")
    assert data.seen == sorted(split["seen"]) and data.unseen == sorted(split["unseen"])
    assert {y for _, y in data.train} == set(data.seen)
    assert {y for _, y in data.test_unseen} == set(data.unseen)
    assert data.attributes.shape == (10, len(classes_json["attributes"]))
    labels = [y for _, y in data.train]
    sampler = EpisodeSampler(labels, ways=4, shots=2, batches=20, seed=3)
    batches = list(sampler)
    assert len(batches) == 20
    for batch in batches:
        assert len(batch) == 8
        classes = [labels[i] for i in batch]
        assert all(c in data.seen for c in classes)
        for k in range(4):  # 4 distinct classes x 2 distinct images, grouped by class
            chunk = batch[2 * k:2 * k + 2]
            assert len({labels[i] for i in chunk}) == 1 and len(set(chunk)) == 2
        assert len(set(classes)) == 4
    assert list(sampler) == batches  # same epoch, same batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_sampler_paper_episode():
    labels = np.repeat(np.arange(10), 5)
    batch = next(iter(EpisodeSampler(labels, ways=8, shots=3, batches=300, seed=0)))
    assert len(batch) == 24 and len(set(batch)) == 24
    assert len({int(labels[i]) for i in batch}) == 8
    with pytest.raises(UserError, match="--ways 11"):
        EpisodeSampler(labels, ways=11, shots=3, batches=1)


def test_folders_and_validation(tmp_path):
    root = tmp_path / "scenes"
    for name in ("a", "b", "c", "d"):
        os.makedirs(root / name)
        for i in range(5):
            Image.new("RGB", (8, 8)).save(root / name / f"{i}.png")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"seen": ["a", "b", "c"], "unseen": ["d"]}))
    data = load_folders(str(root), str(split), 0.2, seed=0)
    assert len(data.train) == 12 and len(data.test_seen) == 3 and len(data.test_unseen) == 5
    assert not {p for p, _ in data.train} & {p for p, _ in data.test_seen}
    val = carve_validation(data.train, data.seen, 1, 0.25, seed=0)
    assert len(val["val_classes"]) == 1 and len(val["train_classes"]) == 2
    assert {y for _, y in val["val_unseen"]} == set(val["val_classes"])
    assert not {p for p, _ in val["train"]} & {p for p, _ in val["val_seen"]}
    assert {y for _, y in val["train"]} == set(val["train_classes"])


def test_attribute_files(tmp_path):
    m = np.arange(8, dtype=np.float32).reshape(4, 2)
    np.save(tmp_path / "a.npy", m)
    assert np.array_equal(load_attributes(str(tmp_path / "a.npy"), NAMES)[0], m)
    scipy_io.savemat(tmp_path / "a.mat", {"att": m.T, "allclasses_names": cell(NAMES)})
    assert np.array_equal(load_attributes(str(tmp_path / "a.mat"), NAMES)[0], m)
    (tmp_path / "a.json").write_text(json.dumps({"classes": NAMES, "attributes": ["x", "y"],
                                                 "groups": {"g": ["y"]}, "matrix": m.tolist()}))
    _matrix, names, groups = load_attributes(str(tmp_path / "a.json"), NAMES)
    assert names == ["x", "y"] and groups == {"g": [1]}
    with pytest.raises(UserError, match="another order"):
        load_attributes(str(tmp_path / "a.json"), NAMES[::-1])
    with pytest.raises(UserError, match="expected 3 classes"):
        load_attributes(str(tmp_path / "a.npy"), NAMES[:3])


def test_transforms():
    img = Image.new("RGB", (64, 48))
    assert dsva_transform(32, True, (0.5,) * 3, (0.5,) * 3)(img).shape == (3, 32, 32)
    x = dsva_transform(32, False, (0.5,) * 3, (0.5,) * 3)(img)
    assert x.shape == (3, 32, 32) and torch.all(x == -1)


@pytest.mark.slow
def test_train_command_line_error_is_one_line_and_exit_2(tmp_path):
    proc = run_script("DSVA/train.py", "--dataset", "rssdivcs", "--data-root", str(tmp_path / "RSSDIVCS"),
                      "--output-dir", str(tmp_path / "run"), check=False)
    assert_one_line_error(proc, "ann_attr_finetune_43_splits.mat", "does not exist")
    assert not (tmp_path / "run").exists()


def test_train_script_one_line_errors(tmp_path, synth_root):
    from DSVA import train as dsva_train
    proc = run_main(dsva_train, "dsva", "--dataset", "rssdivcs", "--data-root", tmp_path / "RSSDIVCS",
                    "--output-dir", tmp_path / "run", check=False)
    assert_one_line_error(proc, "ann_attr_finetune_43_splits.mat", "does not exist")
    assert not (tmp_path / "run").exists()
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"seen": ["airplane"], "unseen": ["volcano"]}))
    proc = run_main(dsva_train, "dsva", "--data-root", synth_root, "--split-file", split, "--output-dir",
                    tmp_path / "run", check=False)
    assert_one_line_error(proc, "unknown classes 'volcano'")


@pytest.mark.slow
def test_train_and_convert_on_rssdivcs_release(rssdivcs, tmp_path):
    """The paper's path end to end on the tiny release: its own 'att' matrix and attribute groups file, then
    annotate.py --from-mat converting the released matrix."""
    import open_clip

    from common.checkpoint import atomic_save
    from common.clip import checkpoint_dict, quiet_open_clip, register_model_config
    from common.config import parse_args
    from DSVA import annotate, train

    root, att = rssdivcs
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "patch_size": 8, "head_width": 8},
           "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    register_model_config("dsva-test-micro", cfg)
    with quiet_open_clip():
        clip = open_clip.create_model("dsva-test-micro")
    atomic_save(checkpoint_dict(clip, "dsva-test-micro", cfg), str(tmp_path / "clip.pt"))
    out = tmp_path / "run"
    argv = ["--dataset", "rssdivcs", "--data-root", str(root), "--split", "43", "--clip-model",
            "dsva-test-micro", "--clip-pretrained", str(tmp_path / "clip.pt"), "--epochs", "1",
            "--batches-per-epoch", "2", "--ways", "3", "--shots", "2", "--workers", "0", "--device", "cpu",
            "--proposal-start-epoch", "-1", "--l-regular", "1e-3", "--output-dir", str(out)]
    train.main(parse_args(train.get_args_parser(), "dsva", argv))
    ck = torch.load(out / "model_final.pt", weights_only=False)
    assert ck["attribute_groups"] == {"functions": [0, 1], "materials": [2], "surface_properties": [3, 4]}
    assert np.array_equal(np.asarray(ck["class_attributes"]), att.T)
    res = json.loads((out / "results.json").read_text())
    assert res["unseen"] == ["harbor"] and "proposal" in res["last"]["all_branches"]
    conv = tmp_path / "converted"
    annotate.main(parse_args(annotate.get_args_parser(), "dsva_annotate", [
        "--from-mat", str(root / "files" / "ann_attr_finetune_43_splits.mat"),
        "--attribute-groups", str(root / "files" / "attri_group_3.json"), "--output-dir", str(conv)]))
    doc = json.loads((conv / "attributes.json").read_text())
    assert doc["classes"] == NAMES and list(doc["groups"]) == ["functions", "materials", "surface_properties"]
    assert np.array_equal(np.asarray(doc["matrix"]), att.T)
