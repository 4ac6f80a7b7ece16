"""The embedded data set, the processed layout readers, split.json, and their errors."""
import itertools
import json
import os

import numpy as np
import pytest
from PIL import Image

from common.datasets import CorruptImage, ImageList
from common.errors import UserError
from common.layout import class_counts, read_list
from common.split import load_split
from conftest import assert_one_line_error, run_script
from data.split import make_split
from data.synthetic.prepare import long_tail_counts


def test_long_tail_counts_formula():
    counts = long_tail_counts(500, 100, 12)
    assert counts[0] == 500 and counts[-1] == 5
    assert counts[5] == round(500 * 100 ** (-5 / 11))
    assert all(a > b for a, b in itertools.pairwise(counts))


def test_synthetic_layout_and_metadata(synth_root, classes_json):
    names = classes_json["names"]
    assert len(names) == 10 and names == sorted(names)
    counts = class_counts(synth_root, "train")
    assert sorted(counts, reverse=True) == long_tail_counts(40, 10, 10)
    assert class_counts(synth_root, "test") == [4] * 10
    m = np.array(classes_json["class_attributes"])
    assert m.shape == (10, len(classes_json["attributes"]))
    assert (m.sum(1) == len(classes_json["attribute_groups"])).all()  # one attribute per group
    assert len({tuple(r) for r in m.tolist()}) == 10  # classes differ
    for tag in ("61", "52", "43"):
        s = classes_json["zsl_splits"][tag]
        assert sorted(s["seen"] + s["unseen"]) == list(range(10))
        assert (m[s["seen"]].max(0) >= m[s["unseen"]].max(0)).all()  # unseen attributes were seen
    assert set(classes_json["zsl_splits"]["61"]["unseen"]) <= set(classes_json["zsl_splits"]["52"]["unseen"])
    rel, label = read_list(os.path.join(synth_root, "anno", "SYNTH_train.txt"))[0]
    assert rel.startswith(f"{label}/")
    with Image.open(os.path.join(synth_root, "train", rel)) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    with open(os.path.join(synth_root, "captions.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == sum(counts) + 40
    assert all(names[r["label"]] in r["caption"] for r in rows)


def test_synthetic_is_deterministic(tmp_path):
    for out in ("a", "b"):
        run_script("data/synthetic/prepare.py", "--output-dir", str(tmp_path / out), "--classes", "10",
                   "--n-max", "6", "--n-test", "1", "--size", "16")
    for rel in ("anno/SYNTH_train.txt", "classes.json", "captions.jsonl", "train/0/00000.jpg"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    proc = run_script("data/synthetic/prepare.py", "--output-dir", str(tmp_path / "a"), check=False)
    assert_one_line_error(proc, "not empty", "--overwrite")


def test_split_ranks_train_and_keeps_sets_on_test(synth_root, classes_json):
    split = make_split(synth_root, 40)
    counts = class_counts(synth_root, "train")
    assert len(split["head"]) == 4 and len(split["tail"]) == 6
    order = split["head"] + split["tail"]
    assert [counts[c] for c in order] == sorted(counts, reverse=True)
    assert split["test_counts"] == [4] * 10  # balanced test: never re-ranked, sets come from train
    assert make_split(synth_root, 33)["head"] == split["head"][:3]


def test_split_mismatch_and_missing(synth_root, tmp_path):
    bad = dict(make_split(synth_root, 40), train_counts=[1] * 10)
    path = tmp_path / "split.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match="does not match the data root"):
        load_split(str(path), synth_root)
    with pytest.raises(UserError, match="does not exist"):
        load_split(str(tmp_path / "none.json"))


def test_read_list_errors(tmp_path):
    path = tmp_path / "X_train.txt"
    path.write_text("0/a.jpg 0\n1/b.jpg 7\n")
    with pytest.raises(UserError, match=r"line 2: label 7 is out of range 0\.\.4"):
        read_list(str(path), 5)
    path.write_text("0/a.jpg zero\n")
    with pytest.raises(UserError, match="line 1: expected"):
        read_list(str(path))


def _image_list_root(tmp_path):
    (tmp_path / "train" / "0").mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "train" / "0" / "ok.jpg")
    (tmp_path / "train" / "0" / "bad.jpg").write_bytes(b"not a jpeg")
    lst = tmp_path / "list.txt"
    lst.write_text("0/ok.jpg 0\n0/bad.jpg 0\n")
    return str(tmp_path / "train"), str(lst)


def test_image_list_missing_file(tmp_path):
    image_dir, lst = _image_list_root(tmp_path)
    with open(lst, "a") as f:
        f.write("0/missing.jpg 0\n")
    with pytest.raises(UserError, match=r"line 3: image .*missing\.jpg does not exist"):
        ImageList(image_dir, [lst])


def test_image_list_corrupt_skip_or_error(tmp_path, capsys):
    image_dir, lst = _image_list_root(tmp_path)
    ds = ImageList(image_dir, [lst], on_corrupt="skip")
    img, label = ds[1]  # falls through to the next readable image
    assert img.size == (8, 8) and int(label) == 0 and ds.skipped == 1
    assert "skipped corrupt image" in capsys.readouterr().err
    with pytest.raises(CorruptImage, match="bad.jpg is corrupt"):
        ImageList(image_dir, [lst], on_corrupt="error")[1]


def test_image_list_label_map_and_absolute_paths(tmp_path):
    image_dir, lst = _image_list_root(tmp_path)
    extra = tmp_path / "extra.txt"
    extra.write_text(f"{tmp_path / 'train' / '0' / 'ok.jpg'} 3\n")
    ds = ImageList(image_dir, [lst, str(extra)], label_map={3: 0})
    assert ds.samples == [(str(tmp_path / "train" / "0" / "ok.jpg"), 0)]


def test_image_list_of_items_with_several_transforms(tmp_path, capsys):
    image_dir, _ = _image_list_root(tmp_path)
    ok, bad = os.path.join(image_dir, "0", "ok.jpg"), os.path.join(image_dir, "0", "bad.jpg")
    ds = ImageList(items=[(ok, 4), (bad, 5)],
                   transform={"size": lambda im: im.size, "mode": lambda im: im.mode})
    assert ds.targets == [4, 5]
    images, label = ds[0]
    assert images == {"size": (8, 8), "mode": "RGB"} and int(label) == 4
    assert ds[1][0]["size"] == (8, 8) and ds.skipped == 1  # the skip policy holds for item lists too
    with pytest.raises(CorruptImage, match="bad.jpg is corrupt"):
        ImageList(items=[(ok, 0), (bad, 1)], on_corrupt="error")[1]
    with pytest.raises(UserError, match=r"1 of 2 images do not exist \(e\.g\. .*gone\.jpg\)"):
        ImageList(items=[(ok, 0), (os.path.join(image_dir, "gone.jpg"), 1)])
