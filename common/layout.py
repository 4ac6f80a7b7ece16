"""The processed layout every TGN stage reads (upstream's).

    <root>/classes.json                 {"dataset": NAME, "names": [...]} (+ attributes for the embedded set)
    <root>/anno/<NAME>_train.txt        lines "<class_id>/<file> <class_id>"
    <root>/anno/<NAME>_test.txt
    <root>/train/<class_id>/<file>.jpg
    <root>/test/<class_id>/<file>.jpg

Class ids follow the alphabetical order of class names, as upstream.
"""
import json
import os

from common.errors import UserError
from common.jsonfile import read_json, require_keys

SPLITS = ("train", "test")


def read_classes(root: str) -> dict:
    if not os.path.isdir(root):
        raise UserError(f"data root {root} does not exist; run the data set's prepare.py first "
                        "(scripts/01_prepare.sh)")
    path = os.path.join(root, "classes.json")
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing; {root} is not a processed data root (run its prepare.py)")
    fix = f"re-run the data set's prepare.py for {root}"
    info = read_json(path, "classes file", fix, expect=dict)
    require_keys(info, ("dataset", "names"), "classes file", path, fix)
    if not isinstance(info["names"], list) or not all(isinstance(n, str) for n in info["names"]):
        raise UserError(f"classes file {path}: 'names' must be a list of class names; {fix}")
    return info


def anno_path(root: str, split: str) -> str:
    return os.path.join(root, "anno", f"{read_classes(root)['dataset']}_{split}.txt")


def read_list(path: str, num_classes: int | None = None) -> list:
    """[(relative_path, label)] from an annotation file; a bad line is a UserError naming file and line."""
    if not os.path.isfile(path):
        raise UserError(f"annotation file {path} does not exist")
    items = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            rel, _, label = line.rpartition(" ")
            try:
                label = int(label)
            except ValueError:
                rel = ""
            if not rel:
                raise UserError(f"{path} line {n}: expected '<path> <class_id>', got '{line}'")
            if num_classes is not None and not 0 <= label < num_classes:
                raise UserError(f"{path} line {n}: label {label} is out of range 0..{num_classes - 1}")
            items.append((rel, label))
    return items


def write_layout(out: str, dataset: str, names: list, entries: dict, extra: dict | None = None) -> None:
    """Write classes.json and the annotation files; entries[split] = [(class_id, file_name)].

    The images themselves are written by the caller to <out>/<split>/<class_id>/<file_name>.
    """
    os.makedirs(os.path.join(out, "anno"), exist_ok=True)
    with open(os.path.join(out, "classes.json"), "w") as f:
        json.dump({"dataset": dataset, "names": list(names), **(extra or {})}, f, indent=1)
    for split in SPLITS:
        with open(os.path.join(out, "anno", f"{dataset}_{split}.txt"), "w") as f:
            f.writelines(f"{cid}/{fname} {cid}\n" for cid, fname in entries.get(split, []))


def class_counts(root: str, split: str) -> list:
    names = read_classes(root)["names"]
    counts = [0] * len(names)
    for _, label in read_list(anno_path(root, split), len(names)):
        counts[label] += 1
    return counts
