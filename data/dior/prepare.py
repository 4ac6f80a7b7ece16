"""DIOR (Li et al. 2020) -> the processed TGN layout: one JPEG chip per object box.

Input, --raw = the unpacked official release:
    JPEGImages-trainval/<id>.jpg, JPEGImages-test/<id>.jpg
    Annotations/<id>.xml or Annotations/Horizontal Bounding Boxes/<id>.xml   (Pascal VOC, horizontal boxes)
    ImageSets/Main/train.txt, val.txt, test.txt                               (one image id a line)
Output: train = the chips of the trainval images (train.txt + val.txt), test = those of the test images,
named `<image id>_<k>.jpg` with k the object's index in its XML (e.g. train/0/00008_0.jpg); k keeps its value
when an earlier object of the image is skipped, so a name always points back to its XML object.

Class names: the XMLs spell two of them with capitals ("Expressway-Service-area", "Expressway-toll-station").
Names are matched case-insensitively, written LOWER-CASE to classes.json, and ids follow their alphabetical
order: 0 airplane ... 7 expressway-service-area, 8 expressway-toll-station ... 19 windmill. An
object of any other class is skipped and counted. Box handling (clipping, degenerate boxes) is
data/chips.py's.
"""
import argparse
import os
import xml.etree.ElementTree as ET

from tqdm import tqdm

from common.config import add_config_arg, parse_args
from common.errors import UserError, cli
from data.chips import ChipSet, prepare_out, require_dir, require_file

DATASET = "DIOR"
XML_NAMES = ("airplane", "airport", "baseballfield", "basketballcourt", "bridge", "chimney", "dam",
             "Expressway-Service-area", "Expressway-toll-station", "golffield", "groundtrackfield", "harbor",
             "overpass", "ship", "stadium", "storagetank", "tenniscourt", "trainstation", "vehicle",
             "windmill")
CLASS_NAMES = sorted(name.lower() for name in XML_NAMES)
CLASS_IDS = {name: i for i, name in enumerate(CLASS_NAMES)}

IMAGE_FOLDERS = {"train": "JPEGImages-trainval", "test": "JPEGImages-test"}
IMAGE_SETS = {"train": ("train.txt", "val.txt"), "test": ("test.txt",)}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Crop DIOR's object boxes into the processed TGN layout")
    add_config_arg(parser)
    parser.add_argument("--raw", required=True,
                        help="the unpacked DIOR release (JPEGImages-*, Annotations, ImageSets)")
    parser.add_argument("--output-dir", required=True, help="output data root, e.g. datasets/dior")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the data set in a non-empty --output-dir")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of the chips")
    return parser


def annotation_dir(raw: str) -> str:
    """Annotations/Horizontal Bounding Boxes/ where the release has it, else Annotations/."""
    folder = require_dir(os.path.join(raw, "Annotations"), "DIOR annotation folder")
    horizontal = os.path.join(folder, "Horizontal Bounding Boxes")
    return horizontal if os.path.isdir(horizontal) else folder


def read_image_ids(raw: str, split: str) -> list:
    ids = set()
    for set_name in IMAGE_SETS[split]:
        path = require_file(os.path.join(raw, "ImageSets", "Main", set_name), "DIOR image set")
        with open(path) as f:
            ids.update(line.strip() for line in f if line.strip())
    return sorted(ids)


def read_voc(path: str) -> list:
    """[(class name, (xmin, ymin, xmax, ymax))] of a Pascal VOC XML, in file order."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise UserError(f"{path} is not valid XML ({e}); re-download the annotations") from None
    objects = []
    for k, obj in enumerate(root.findall("object")):
        name, box = obj.findtext("name"), obj.find("bndbox")
        try:
            coords = tuple(float(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            coords = None
        if not name or coords is None:
            raise UserError(f"{path}: object {k} lacks a <name> or a numeric <bndbox>; "
                            f"re-download the annotations")
        objects.append((name.strip(), coords))
    return objects


def read_split(raw: str, split: str, ann_dir: str) -> list:
    """[(image id, image path, objects)] of a split; every listed image and its XML must exist."""
    image_dir = require_dir(os.path.join(raw, IMAGE_FOLDERS[split]), "DIOR image folder")
    images = []
    for image_id in read_image_ids(raw, split):
        listed = f"image {image_id} is listed in ImageSets/Main; restore the file or remove the id there"
        image_path = require_file(os.path.join(image_dir, f"{image_id}.jpg"), "DIOR image", listed)
        xml_path = require_file(os.path.join(ann_dir, f"{image_id}.xml"), "DIOR annotation", listed)
        images.append((image_id, image_path, read_voc(xml_path)))
    return images


@cli
def main(args):
    require_dir(args.raw, "DIOR folder")
    ann_dir = annotation_dir(args.raw)
    splits = {split: read_split(args.raw, split, ann_dir) for split in IMAGE_FOLDERS}
    prepare_out(args.output_dir, args.overwrite)

    with ChipSet(args.output_dir, DATASET, CLASS_NAMES, args.quality) as chips:
        for split, images in splits.items():
            for image_id, image_path, objects in tqdm(images, desc=f"{DATASET} {split}", unit="image"):
                kept = []
                for k, (name, box) in enumerate(objects):
                    if name.lower() in CLASS_IDS:
                        kept.append((k, CLASS_IDS[name.lower()], box))
                    else:
                        chips.skip(f"class '{name}' is not a DIOR class")
                chips.crop_objects(split, image_path, image_id, kept)
        chips.finish()
    return chips


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "prepare_dior"))
