"""Turn folders written by CDTG/generate.py into an extra training list in the data set's original class ids
(the step upstream left undocumented).

    python CDTG/expand.py --generated runs/cdtg/dior/generated --out runs/cdtg/dior/expanded_train.txt
    python Classification/train.py ... --train-list data/dior/processed/anno/DIOR_train.txt \\
        --train-list runs/cdtg/dior/expanded_train.txt

Each line is `<image path> <original class id>` (common.layout.read_list / common.datasets.ImageList read it),
the path relative to <data root>/train as the lines of the data's own list (no copying into <root>/train;
moving runs/ and the data together keeps the list valid). The class id comes from each folder's manifest
entry (tail label k -> split.json's tail[k]), checked against the data root's class names when one is given.
"""
import argparse
import os

from CDTG.manifest import list_entries, read_manifest
from common.config import add_config_arg, parse_args
from common.errors import UserError, cli
from common.layout import read_classes
from common.paths import relative


def get_args_parser():
    p = argparse.ArgumentParser("CDTG: generated images -> extra training list")
    add_config_arg(p)
    p.add_argument("--generated", nargs="+", default=None, help="output folder(s) of CDTG/generate.py")
    p.add_argument("--out", default=None, help="list to write (e.g. runs/cdtg/<dataset>/expanded_train.txt)")
    p.add_argument("--n-per-class", type=int, default=None,
                   help="take at most this many images per class (over all folders, in order); default: all")
    p.add_argument("--data-root", default=None,
                   help="check the class ids and names against this processed data root (default: the "
                        "manifest's)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file with other lines")
    return p


def check_against_root(manifest: dict, root: str, folder: str) -> None:
    info = read_classes(root)
    if info["dataset"] != manifest["dataset"]:
        raise UserError(f"{folder} holds {manifest['dataset']} images but {root} is {info['dataset']}")
    for entry in manifest["classes"]:
        cid = entry["class_id"]
        if not 0 <= cid < len(info["names"]) or info["names"][cid] != entry["name"]:
            raise UserError(f"{folder}: class {cid} '{entry['name']}' is not class {cid} of {root}; was the "
                            f"data set re-prepared with other classes?")


def expand(folders: list, n_per_class: int | None = None, data_root: str | None = None) -> list:
    rows, taken = [], {}
    for folder in folders:
        manifest = read_manifest(folder)
        check_against_root(manifest, data_root or manifest["data_root"], folder)
        for path, cid in list_entries(folder, manifest):
            if n_per_class is not None and taken.get(cid, 0) >= n_per_class:
                continue
            taken[cid] = taken.get(cid, 0) + 1
            rows.append((path, cid))
    return rows


def unique_folders(folders: list) -> list:
    """The folders in order, each real folder once (the same folder given twice would list its images
    twice)."""
    seen, unique = {}, []
    for folder in folders:
        real = os.path.realpath(folder)
        if real in seen:
            print(f"{folder} is {seen[real]} given again; listed once")
            continue
        seen[real] = folder
        unique.append(folder)
    return unique


@cli
def main(args):
    if not args.generated or not args.out:
        raise UserError("--generated FOLDER [FOLDER ...] and --out FILE are required")
    if args.n_per_class is not None and args.n_per_class < 1:
        raise UserError(f"--n-per-class must be a positive number of images, got {args.n_per_class}; leave "
                        f"it out to take every image")
    folders = unique_folders(args.generated)
    rows = expand(folders, args.n_per_class, args.data_root)
    image_dir = os.path.join(args.data_root or read_manifest(folders[0])["data_root"], "train")
    if not rows:
        raise UserError("no generated image found in " + ", ".join(args.generated))
    text = "".join(f"{relative(path, image_dir)} {cid}\n" for path, cid in rows)
    if os.path.exists(args.out) and not args.overwrite:
        with open(args.out) as f:
            if f.read() == text:
                print(f"{args.out} already lists these {len(rows)} images; nothing to do")
                return
        raise UserError(f"{args.out} already exists with other lines; pass --overwrite to replace it or "
                        f"choose another --out")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, args.out)
    counts = {}
    for _, cid in rows:
        counts[cid] = counts.get(cid, 0) + 1
    print(f"wrote {len(rows)} lines to {args.out}: " + ", ".join(f"class {c}: {n}"
                                                                 for c, n in sorted(counts.items())))


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "cdtg_expand"))
