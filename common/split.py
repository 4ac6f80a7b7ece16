"""Reading split.json (written by data/split.py) and checking that it belongs to the data root in use."""
import os

from common.errors import UserError
from common.jsonfile import read_json, require_keys
from common.layout import class_counts, read_classes


def load_split(path: str, root: str | None = None) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"split file {path} does not exist; run data/split.py --root <data root> first")
    fix = "re-run data/split.py --root <data root>"
    split = read_json(path, "split file", fix, expect=dict)
    require_keys(split, ("head", "tail", "names"), "split file", path, fix)
    if root is not None:
        names = read_classes(root)["names"]
        if split.get("names") != names or split.get("train_counts") != class_counts(root, "train"):
            raise UserError(f"split file {path} does not match the data root {root} (other classes or train "
                            f"counts); re-run data/split.py --root {root}")
    return split


def label_map(split: dict, part: str) -> dict:
    """Original class id -> index in the ordered list of one part ('head' or 'tail')."""
    return {cid: i for i, cid in enumerate(split[part])}


def optional_split(path: str | None, root: str) -> dict | None:
    """The split named by --split (which must exist), else <root>/split.json if present, else None."""
    default = os.path.join(root, "split.json")
    if path or os.path.isfile(default):
        return load_split(path or default, root)
    return None


def load_data_split(args) -> dict:
    """split.json of a KMDN stage: --split or <--data-root>/split.json, checked against the data root and for
    disjoint head and tail parts."""
    if not args.data_root:
        raise UserError("--data-root is required (or set data_root in the config's KMDN sections)")
    read_classes(args.data_root)
    split = load_split(args.split or os.path.join(args.data_root, "split.json"), args.data_root)
    check_disjoint(split)
    return split


def check_disjoint(split: dict) -> None:
    shared = sorted(set(split["head"]) & set(split["tail"]))
    if shared:
        raise UserError(f"split.json puts classes {shared} in both head and tail; re-run data/split.py")
