"""The converters of the real data sets (data/{dior,dota,fgsc23}/prepare.py) on tiny fixtures in the
official formats: exact annotation lines, file names, chip sizes, classes.json, skip counts, one-line
errors."""
import json
import os
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw

from common.config import parse_args
from data.chips import CLIPPED, DEGENERATE, OUTSIDE, clip_box
from data.dior import prepare as dior
from data.dota import prepare as dota
from data.fgsc23 import prepare as fgsc23

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIOR_ORDER = ["airplane", "airport", "baseballfield", "basketballcourt", "bridge", "chimney", "dam",
                   "expressway-service-area", "expressway-toll-station", "golffield", "groundtrackfield",
                   "harbor", "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation",
                   "vehicle", "windmill"]


def convert(module, stage, *argv):
    return module.main(parse_args(module.get_args_parser(), stage, [str(a) for a in argv]))


def run_script(name, *argv):
    return subprocess.run([sys.executable, os.path.join(REPO, "data", name, "prepare.py"), *map(str, argv)],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def anno_lines(out, dataset, split):
    with open(os.path.join(out, "anno", f"{dataset}_{split}.txt")) as f:
        return f.read().splitlines()


def chip_sizes(out):
    """{'<split>/<class_id>/<file>': (width, height)} of every image written."""
    sizes = {}
    for split in ("train", "test"):
        for folder, _, files in os.walk(os.path.join(out, split)):
            for f in files:
                with Image.open(os.path.join(folder, f)) as im:
                    assert im.format == "JPEG" and im.mode == "RGB"
                    sizes[os.path.relpath(os.path.join(folder, f), out)] = im.size
    return sizes


def classes_json(out):
    with open(os.path.join(out, "classes.json")) as f:
        return json.load(f)


def test_clip_box():
    assert clip_box((2, 3, 12, 10), 40, 30) == ((2, 3, 12, 10), None)
    assert clip_box((10.5, 5.2, 20.5, 15.7), 40, 30) == ((10, 5, 21, 16), None)
    assert clip_box((-5, 20, 50, 40), 40, 30) == ((0, 20, 40, 30), CLIPPED)
    assert clip_box((5, 5, 5, 9), 40, 30) == (None, DEGENERATE)
    assert clip_box((9, 5, 5, 9), 40, 30) == (None, DEGENERATE)
    assert clip_box((40, 0, 45, 9), 40, 30) == (None, OUTSIDE)


# ---------------------------------------------------------------- DIOR

def voc_xml(objects):
    body = "".join(f"<object><name>{name}</name><pose>Unspecified</pose><difficult>0</difficult><bndbox>"
                   f"<xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
                   for name, (x0, y0, x1, y1) in objects)
    size = "<size><width>40</width><height>30</height></size>"
    return f"<annotation><filename>x.jpg</filename>{size}{body}</annotation>"


DIOR_IMAGES = {  # id: (folder, ImageSets list, objects)
    "00001": ("JPEGImages-trainval", "train.txt", [("airplane", (2, 3, 12, 10)),
                                                   ("Expressway-Service-area", (30, 20, 50, 40)),
                                                   ("ship", (5, 5, 5, 9))]),
    "00002": ("JPEGImages-trainval", "val.txt", [("vehicle", (0, 0, 8, 8)),
                                                 ("windmill", (45, 35, 60, 50)),
                                                 ("bus", (1, 1, 5, 5))]),
    "00003": ("JPEGImages-test", "test.txt", [("storagetank", (10, 10, 20, 25)),
                                              ("Expressway-toll-station", (1, 1, 4, 4))]),
}


def write_dior(raw, annotation_folder):
    os.makedirs(os.path.join(raw, "ImageSets", "Main"))
    os.makedirs(os.path.join(raw, annotation_folder))
    for image_id, (folder, image_set, objects) in DIOR_IMAGES.items():
        os.makedirs(os.path.join(raw, folder), exist_ok=True)
        image = Image.new("RGB", (40, 30), (128, 128, 128))
        ImageDraw.Draw(image).rectangle((2, 3, 11, 9), fill=(255, 0, 0))  # the airplane of 00001
        image.save(os.path.join(raw, folder, f"{image_id}.jpg"), quality=95)
        with open(os.path.join(raw, annotation_folder, f"{image_id}.xml"), "w") as f:
            f.write(voc_xml(objects))
        with open(os.path.join(raw, "ImageSets", "Main", image_set), "a") as f:
            f.write(f"{image_id}\n")


def test_dior_class_order_is_spec_order():
    assert dior.CLASS_NAMES == DIOR_ORDER


@pytest.mark.parametrize("annotation_folder", ["Annotations", "Annotations/Horizontal Bounding Boxes"])
def test_dior(tmp_path, capsys, annotation_folder):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_dior(raw, annotation_folder)
    chips = convert(dior, "prepare_dior", "--raw", raw, "--output-dir", out)

    assert anno_lines(out, "DIOR", "train") == ["0/00001_0.jpg 0", "7/00001_1.jpg 7", "18/00002_0.jpg 18"]
    assert anno_lines(out, "DIOR", "test") == ["15/00003_0.jpg 15", "8/00003_1.jpg 8"]
    assert chip_sizes(out) == {"train/0/00001_0.jpg": (10, 7), "train/7/00001_1.jpg": (10, 10),
                               "train/18/00002_0.jpg": (8, 8), "test/15/00003_0.jpg": (10, 15),
                               "test/8/00003_1.jpg": (3, 3)}
    assert classes_json(out) == {"dataset": "DIOR", "names": DIOR_ORDER}
    assert chips.skipped == {DEGENERATE: 1, OUTSIDE: 1, "class 'bus' is not a DIOR class": 1}
    assert chips.clipped == 1
    with Image.open(out / "train/0/00001_0.jpg") as chip:
        r, g, b = chip.getpixel((5, 3))
    assert r > 230 and g < 30 and b < 30
    printed = capsys.readouterr().out
    assert "   0  airplane                       1        0" in printed
    assert ("skipped objects: box outside the image: 1, class 'bus' is not a DIOR class: 1, "
            "degenerate box: 1") in printed
    assert "boxes clipped to the image (kept): 1" in printed


def test_dior_refuses_non_empty_out_unless_overwrite(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_dior(raw, "Annotations")
    os.makedirs(out / "train" / "3")
    (out / "train" / "3" / "stale.jpg").write_bytes(b"x")
    with pytest.raises(SystemExit) as exit_info:
        convert(dior, "prepare_dior", "--raw", raw, "--output-dir", out)
    assert exit_info.value.code == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    convert(dior, "prepare_dior", "--raw", raw, "--output-dir", out, "--overwrite")
    assert not (out / "train" / "3").exists()
    assert len(chip_sizes(out)) == 5


def test_dior_errors(tmp_path):
    assert_one_line_error(run_script("dior", "--raw", tmp_path / "nope", "--output-dir", tmp_path / "out"),
                          "DIOR folder", "nope", "does not exist")
    raw = tmp_path / "raw"
    write_dior(raw, "Annotations/Horizontal Bounding Boxes")
    os.remove(raw / "Annotations/Horizontal Bounding Boxes/00002.xml")
    assert_one_line_error(run_script("dior", "--raw", raw, "--output-dir", tmp_path / "out"),
                          "00002.xml does not exist", "image 00002 is listed in ImageSets/Main")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- DOTA

DOTA_LABELS = {  # (split folder, image name): (image size, mode, labelTxt)
    ("train", "P0001"): ((50, 40), "RGB", ("imagesource:GoogleEarth\ngsd:0.146343590398\n"
                                           "2 3 12 3 12 10 2 10 plane 0\n"
                                           "10.5 5.2 20.5 5.2 20.5 15.7 10.5 15.7 ship 1\n"
                                           "40 30 60 30 60 50 40 50 large-vehicle 0\n"
                                           "5 5 5 5 5 5 5 5 small-vehicle 0\n"
                                           "1 1 4 1 4 4 1 4 container-crane 0\n")),
    ("train", "P0002"): ((50, 40), "L", ("70 70 80 70 80 80 70 80 harbor 0\n"
                                         "20 0 30 10 20 20 10 10 roundabout 0\n")),
    ("val", "P0003"): ((30, 30), "RGBA", ("imagesource:GoogleEarth\ngsd:null\n"
                                          "0 0 6 0 6 9 0 9 tennis-court 0\n")),
}


def write_dota(raw):
    for (split, name), (size, mode, label) in DOTA_LABELS.items():
        os.makedirs(raw / split / "images", exist_ok=True)
        os.makedirs(raw / split / "labelTxt", exist_ok=True)
        Image.new(mode, size).save(raw / split / "images" / f"{name}.png")
        (raw / split / "labelTxt" / f"{name}.txt").write_text(label)


def test_dota_class_ids():
    assert dota.CLASS_NAMES[:3] == ["baseball-diamond", "basketball-court", "bridge"]
    assert [dota.CLASS_NAMES[i] for i in (6, 9, 10)] == ["large-vehicle", "ship", "small-vehicle"]
    assert len(dota.CLASS_NAMES) == 15


def test_dota(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_dota(raw)
    chips = convert(dota, "prepare_dota", "--raw", raw, "--output-dir", out)

    assert anno_lines(out, "DOTA", "train") == ["7/P0001_0.jpg 7", "9/P0001_1.jpg 9", "6/P0001_2.jpg 6",
                                                "8/P0002_1.jpg 8"]
    assert anno_lines(out, "DOTA", "test") == ["14/P0003_0.jpg 14"]
    assert chip_sizes(out) == {"train/7/P0001_0.jpg": (10, 7), "train/9/P0001_1.jpg": (11, 11),
                               "train/6/P0001_2.jpg": (10, 10), "train/8/P0002_1.jpg": (20, 20),
                               "test/14/P0003_0.jpg": (6, 9)}
    assert classes_json(out) == {"dataset": "DOTA", "names": dota.CLASS_NAMES}
    assert chips.skipped == {DEGENERATE: 1, OUTSIDE: 1, "class 'container-crane' is not in DOTA v1.0": 1}
    assert chips.clipped == 1
    assert "skipped objects: box outside the image: 1, class 'container-crane' is not in DOTA v1.0: 1, " \
           "degenerate box: 1" in capsys.readouterr().out


def test_dota_skip_difficult(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_dota(raw)
    chips = convert(dota, "prepare_dota", "--raw", raw, "--output-dir", out, "--skip-difficult")
    assert anno_lines(out, "DOTA", "train") == ["7/P0001_0.jpg 7", "6/P0001_2.jpg 6", "8/P0002_1.jpg 8"]
    assert chips.skipped["difficult (--skip-difficult)"] == 1
    assert sum(chips.skipped.values()) == 4


def test_dota_bad_label_line(tmp_path, capsys):
    raw = tmp_path / "raw"
    write_dota(raw)
    (raw / "val" / "labelTxt" / "P0003.txt").write_text("gsd:null\n0 0 6 0 6 9 tennis-court\n")
    with pytest.raises(SystemExit):
        convert(dota, "prepare_dota", "--raw", raw, "--output-dir", tmp_path / "out")
    assert "P0003.txt line 2: expected '<8 coordinates> <class> <difficult>'" in capsys.readouterr().err


def test_dota_errors(tmp_path):
    assert_one_line_error(run_script("dota", "--raw", tmp_path / "nope", "--output-dir", tmp_path / "out"),
                          "DOTA folder", "does not exist")
    raw = tmp_path / "raw"
    write_dota(raw)
    os.remove(raw / "train" / "labelTxt" / "P0002.txt")
    assert_one_line_error(run_script("dota", "--raw", raw, "--output-dir", tmp_path / "out"),
                          "P0002.txt does not exist", "image P0002.png has no labels")


# ---------------------------------------------------------------- FGSC-23

def write_fgsc(root, counts):
    """counts: {folder name: (number of images, extension)}; images are 12 x 8 px."""
    for folder, (n, ext) in counts.items():
        os.makedirs(root / folder)
        for i in range(n):
            Image.new("RGB", (12, 8), (10 * i, 0, 0)).save(root / folder / f"{folder[0]}{i:03d}.{ext}")


def test_fgsc23_stratified_split(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_fgsc(raw, {"0-aircraft carrier": (5, "jpg"), "1": (10, "png"), "2_destroyer": (3, "jpg"),
                     "extras": (1, "jpg")})
    (raw / "readme.txt").write_text("not a class")
    chips = convert(fgsc23, "prepare_fgsc23", "--raw", raw, "--output-dir", out, "--num-classes", 3)

    assert classes_json(out) == {"dataset": "FGSC23", "names": ["aircraft carrier", "class_1", "destroyer"]}
    assert chips.counts == {"train": [4, 8, 2], "test": [1, 2, 1]}
    train, test = anno_lines(out, "FGSC23", "train"), anno_lines(out, "FGSC23", "test")
    every = [f"{c}/{c}{i:03d}.jpg {c}" for c, n in ((0, 5), (1, 10), (2, 3)) for i in range(n)]
    assert sorted(train + test) == sorted(every)
    sizes = chip_sizes(out)
    assert set(sizes) == {f"{split}/{line.split()[0]}" for split, lines in (("train", train), ("test", test))
                          for line in lines}
    assert set(sizes.values()) == {(12, 8)}
    assert (out / "train/0/0000.jpg").read_bytes() == (raw / "0-aircraft carrier/0000.jpg").read_bytes() or \
        (out / "test/0/0000.jpg").read_bytes() == (raw / "0-aircraft carrier/0000.jpg").read_bytes()
    assert "stratified split with --test-ratio 0.2 --seed 0" in capsys.readouterr().out

    again = convert(fgsc23, "prepare_fgsc23", "--raw", raw, "--output-dir", tmp_path / "again",
                    "--num-classes", 3)
    assert again.entries == chips.entries
    other = convert(fgsc23, "prepare_fgsc23", "--raw", raw, "--output-dir", tmp_path / "other",
                    "--num-classes", 3, "--seed", 1)
    assert other.counts == chips.counts and other.entries != chips.entries


def test_fgsc23_release_split(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    write_fgsc(raw / "train", {"0": (2, "jpg"), "1-frigate": (3, "bmp")})
    write_fgsc(raw / "test", {"0": (1, "jpg"), "1-frigate": (1, "bmp")})
    chips = convert(fgsc23, "prepare_fgsc23", "--raw", raw, "--output-dir", out, "--num-classes", 2)
    assert classes_json(out) == {"dataset": "FGSC23", "names": ["class_0", "frigate"]}
    assert anno_lines(out, "FGSC23", "train") == ["0/0000.jpg 0", "0/0001.jpg 0",
                                                  "1/1000.jpg 1", "1/1001.jpg 1", "1/1002.jpg 1"]
    assert anno_lines(out, "FGSC23", "test") == ["0/0000.jpg 0", "1/1000.jpg 1"]
    assert set(chip_sizes(out).values()) == {(12, 8)}
    assert chips.skipped == {}


def test_fgsc23_errors(tmp_path):
    assert_one_line_error(run_script("fgsc23", "--raw", tmp_path / "nope", "--output-dir", tmp_path / "out"),
                          "FGSC-23 folder", "does not exist")
    raw = tmp_path / "raw"
    write_fgsc(raw, {"0": (1, "jpg"), "1": (1, "jpg")})
    assert_one_line_error(run_script("fgsc23", "--raw", raw, "--output-dir", tmp_path / "out",
                                     "--num-classes", 3),
                          "expected class folders 0..2; missing [2]")
    os.makedirs(raw / "train")
    assert_one_line_error(run_script("fgsc23", "--raw", raw, "--output-dir", tmp_path / "out",
                                     "--num-classes", 2),
                          "FGSC-23 test folder", "does not exist")
