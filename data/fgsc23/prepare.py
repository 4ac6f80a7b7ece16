"""FGSC-23 (Zhang et al. 2020, 23 fine-grained ship classes) -> the processed TGN layout.

Input, --raw = the unpacked release: one folder of ship chips per class, named `<id>`, `<id>-<name>` or
`<id>_<name>` with id 0..22, either directly in --raw or in --raw/train/ and --raw/test/. Other folders and
files, non-image files in class folders and class folders without images are left out and counted in the
summary. With train/ and test/ those splits are kept; without them each class is split on its own
(stratified): its files, sorted by name, are shuffled with random.Random(--seed) (one generator, classes in id
order) and the first round(n * --test-ratio) go to test (the official split has 3,256 train / 825 test).

Class ids are the numeric folder ids, NOT the alphabetical order of names: FGSC-23's upstream lists use the
folder ids. Names in classes.json: the folder name's text after the id and its separator, else
"class_<id>". Images keep their file stem, `<stem>.jpg`; JPEG files are copied byte for byte, other formats
re-encoded.
"""
import argparse
import math
import os
import random
import re

from tqdm import tqdm

from common.config import add_config_arg, parse_args
from common.errors import UserError, cli
from common.layout import SPLITS
from data.chips import ChipSet, prepare_out, require_dir, scan_folder

DATASET = "FGSC23"
CLASS_FOLDER = re.compile(r"(\d+)(?:[-_](.*))?")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Copy FGSC-23's ship chips into the processed TGN layout")
    add_config_arg(parser)
    parser.add_argument("--raw", required=True,
                        help="the unpacked FGSC-23 release: class folders, maybe under train/ and test/")
    parser.add_argument("--output-dir", required=True, help="output data root, e.g. datasets/fgsc23")
    parser.add_argument("--num-classes", type=int, default=23, help="class folders expected, ids 0..N-1")
    parser.add_argument("--test-ratio", type=float, default=0.2,
                        help="share of each class sent to test when the release has no train/ and test/")
    parser.add_argument("--seed", type=int, default=0, help="seed of that split")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the data set in a non-empty --output-dir")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of re-encoded non-JPEG images")
    return parser


def class_folders(folder: str, ignored: list | None = None) -> dict:
    """{class id: (name or None, folder path)} of the class folders directly in `folder`; the paths of the
    other entries are appended to `ignored`."""
    found = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        match = CLASS_FOLDER.fullmatch(entry.name)
        if not (match and entry.is_dir()):
            if ignored is not None and entry.name not in SPLITS:
                ignored.append(entry.path)
            continue
        class_id = int(match.group(1))
        if class_id in found:
            first = os.path.basename(found[class_id][1])
            raise UserError(f"{folder} has two folders for class {class_id}: {first} and {entry.name}; "
                            f"keep one")
        found[class_id] = ((match.group(2) or "").strip() or None, entry.path)
    return found


def class_names(folders: list, num_classes: int) -> list:
    """Names of ids 0..num_classes-1 from the class folders of every split; the ids must be exactly those."""
    found = {}
    for split_folders in folders:
        for class_id, (name, _) in split_folders.items():
            found[class_id] = found.get(class_id) or name
    missing = sorted(set(range(num_classes)) - set(found))
    extra = sorted(set(found) - set(range(num_classes)))
    if missing or extra:
        raise UserError(f"expected class folders 0..{num_classes - 1}; missing {missing}, "
                        f"unexpected {extra}; fix --raw or --num-classes")
    return [found[class_id] or f"class_{class_id}" for class_id in range(num_classes)]


def files_of(folders: dict, non_images: list | None = None) -> dict:
    """{class id: [image paths, sorted]}; the paths of the non-image entries are appended to `non_images`."""
    files = {}
    for class_id, (_, path) in sorted(folders.items()):
        images, others = scan_folder(path)
        files[class_id] = [os.path.join(path, f) for f in images]
        if non_images is not None:
            non_images += [os.path.join(path, f) for f in others]
    return files


def stratified_split(files: dict, test_ratio: float, seed: int) -> dict:
    """{split: [(class id, path)]}: round(n * test_ratio) random files of each class go to test."""
    if not 0 <= test_ratio < 1:
        raise UserError(f"--test-ratio must be in [0, 1), got {test_ratio}")
    rng = random.Random(seed)
    split = {"train": [], "test": []}
    for class_id, paths in sorted(files.items()):
        shuffled = list(paths)
        rng.shuffle(shuffled)
        n_test = math.floor(len(shuffled) * test_ratio + 0.5)
        split["test"] += [(class_id, p) for p in sorted(shuffled[:n_test])]
        split["train"] += [(class_id, p) for p in sorted(shuffled[n_test:])]
    return split


@cli
def main(args):
    require_dir(args.raw, "FGSC-23 folder")
    not_class, non_images, empty = [], [], []
    if any(os.path.isdir(os.path.join(args.raw, split)) for split in SPLITS):
        folders = {split: class_folders(require_dir(os.path.join(args.raw, split), f"FGSC-23 {split} folder"),
                                        not_class) for split in SPLITS}
        names = class_names(list(folders.values()), args.num_classes)
        files = {split: files_of(folders[split], non_images) for split in SPLITS}
        empty = [folders[split][c][1] for split in SPLITS for c, paths in files[split].items() if not paths]
        items = {split: [(class_id, path) for class_id, paths in files[split].items() for path in paths]
                 for split in SPLITS}
        print("using the release's train/ and test/ folders")
    else:
        folders = class_folders(args.raw, not_class)
        names = class_names([folders], args.num_classes)
        files = files_of(folders, non_images)
        empty = [folders[c][1] for c, paths in files.items() if not paths]
        items = stratified_split(files, args.test_ratio, args.seed)
        print(f"no train/ and test/ folders: stratified split with --test-ratio {args.test_ratio} "
              f"--seed {args.seed}")
    prepare_out(args.output_dir, args.overwrite)

    with ChipSet(args.output_dir, DATASET, names, args.quality) as chips:
        for path in not_class:
            chips.ignore("not a class folder", path)
        for path in non_images:
            chips.ignore("not an image file", path)
        for path in empty:
            chips.empty_folder(path)
        for split in SPLITS:
            for class_id, path in tqdm(items[split], desc=f"{DATASET} {split}", unit="image"):
                chips.add_image_file(split, class_id, path)
        chips.finish()
    return chips


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "prepare_fgsc23"))
