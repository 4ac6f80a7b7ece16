"""DOTA v1.0 (Xia et al. 2018) -> the processed TGN layout: one JPEG chip per object.

Input, --raw = the unpacked official release:
    train/images/<name>.png, train/labelTxt/<name>.txt   -> our train split
    val/images/<name>.png,   val/labelTxt/<name>.txt     -> our test split (DOTA's test labels are not public)
A labelTxt line is `x1 y1 x2 y2 x3 y3 x4 y4 <class> <difficult>`; header lines such as
`imagesource:GoogleEarth` and `gsd:0.146` are skipped. Each object is cropped to the axis-aligned bounding
rectangle of its polygon, clipped to the image (data/chips.py), and saved as `<name>_<k>.jpg`, k = the
object's index among the object lines of its labelTxt (kept when an earlier object is skipped).

Classes: v1.0's 15, ids in alphabetical order of their names (0 baseball-diamond ... 14 tennis-court). Objects
of other classes (e.g. v1.5's container-crane) are skipped and counted; so are difficult objects with
--skip-difficult.
"""
import argparse
import os
from typing import NamedTuple

from tqdm import tqdm

from common.config import add_config_arg, parse_args
from common.errors import UserError, cli
from data.chips import ChipSet, polygon_box, prepare_out, require_dir, require_file, scan_folder

DATASET = "DOTA"
CLASS_NAMES = sorted(["plane", "ship", "storage-tank", "baseball-diamond", "tennis-court", "basketball-court",
                      "ground-track-field", "harbor", "bridge", "large-vehicle", "small-vehicle",
                      "helicopter", "roundabout", "soccer-ball-field", "swimming-pool"])
CLASS_IDS = {name: i for i, name in enumerate(CLASS_NAMES)}

RAW_SPLITS = {"train": "train", "test": "val"}


class DotaObject(NamedTuple):
    name: str
    box: tuple
    difficult: bool


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Crop DOTA v1.0's objects into the processed TGN layout")
    add_config_arg(parser)
    parser.add_argument("--raw", required=True,
                        help="the unpacked DOTA release (train/ and val/, each with images/ and labelTxt/)")
    parser.add_argument("--output-dir", required=True, help="output data root, e.g. datasets/dota")
    parser.add_argument("--skip-difficult", action="store_true", help="leave out objects flagged difficult")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the data set in a non-empty --output-dir")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of the chips")
    return parser


def read_label_txt(path: str) -> list:
    """[DotaObject] of a labelTxt file, in file order, header lines left out."""
    objects = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields or ":" in fields[0]:
                continue
            try:
                if len(fields) < 9:
                    raise ValueError
                coords = [float(v) for v in fields[:8]]
                difficult = int(fields[9]) != 0 if len(fields) > 9 else False
            except ValueError:
                raise UserError(f"{path} line {n}: expected '<8 coordinates> <class> <difficult>', got "
                                f"'{line.strip()}'") from None
            objects.append(DotaObject(fields[8], polygon_box(coords[0::2], coords[1::2]), difficult))
    return objects


def read_split(raw: str, split: str) -> tuple[list, list]:
    """([(image name, image path, objects)], [paths of the non-image entries in images/]) of a split; every
    image must have its labelTxt."""
    folder = require_dir(os.path.join(raw, RAW_SPLITS[split]), "DOTA split folder")
    image_dir = require_dir(os.path.join(folder, "images"), "DOTA image folder")
    label_dir = require_dir(os.path.join(folder, "labelTxt"), "DOTA label folder")
    images = []
    files, others = scan_folder(image_dir)
    for file_name in files:
        name = os.path.splitext(file_name)[0]
        label_path = require_file(os.path.join(label_dir, f"{name}.txt"), "DOTA label file",
                                  f"image {file_name} has no labels; restore the file or remove the image")
        images.append((name, os.path.join(image_dir, file_name), read_label_txt(label_path)))
    return images, [os.path.join(image_dir, f) for f in others]


@cli
def main(args):
    require_dir(args.raw, "DOTA folder")
    splits = {split: read_split(args.raw, split) for split in RAW_SPLITS}
    prepare_out(args.output_dir, args.overwrite)

    with ChipSet(args.output_dir, DATASET, CLASS_NAMES, args.quality) as chips:
        for split, (images, others) in splits.items():
            for path in others:
                chips.ignore("not an image file in images/", path)
            for name, image_path, objects in tqdm(images, desc=f"{DATASET} {split}", unit="image"):
                kept = []
                for k, obj in enumerate(objects):
                    if obj.name not in CLASS_IDS:
                        chips.skip(f"class '{obj.name}' is not in DOTA v1.0")
                    elif obj.difficult and args.skip_difficult:
                        chips.skip("difficult (--skip-difficult)")
                    else:
                        kept.append((k, CLASS_IDS[obj.name], obj.box))
                chips.crop_objects(split, image_path, name, kept)
        chips.finish()
    return chips


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "prepare_dota"))
