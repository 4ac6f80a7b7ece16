"""Head/tail split of a processed data root -> split.json, read by every later TGN stage.

    python data/split.py --root data/dior/processed --head-percent 40

Classes are ranked by train count (descending; ties by class id); the first int(C * p / 100) are head, the
rest tail. The same class sets apply to the test split: it is never re-ranked (upstream re-ranked it).
"""
import argparse
import json
import os

from common.config import add_config_arg, parse_args
from common.errors import UserError, cli
from common.layout import anno_path, class_counts, read_classes
from common.paths import relative


def get_args_parser():
    p = argparse.ArgumentParser("Head/tail split")
    add_config_arg(p)
    p.add_argument("--data-root", required=True, help="processed data root (holds classes.json and anno/)")
    p.add_argument("--head-percent", type=float, default=40.0,
                   help="percentage of classes that are head: DIOR 40, FGSC-23 33")
    p.add_argument("--out", default=None, help="output file (default: <root>/split.json)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing split file that holds another split (models trained on the old "
                        "split stop matching it); re-running with the same result needs no flag")
    return p


def make_split(root: str, head_percent: float) -> dict:
    if not 0 < head_percent < 100:
        raise UserError(f"--head-percent must be between 0 and 100, got {head_percent}")
    info = read_classes(root)
    names = info["names"]
    train, test = class_counts(root, "train"), class_counts(root, "test")
    ranked = sorted(range(len(names)), key=lambda c: (-train[c], c))
    n_head = int(len(names) * head_percent / 100)
    if not 0 < n_head < len(names):
        raise UserError(f"--head-percent {head_percent} of {len(names)} classes leaves no head or no tail "
                        "class")
    return {"dataset": info["dataset"], "root": os.path.abspath(root), "head_percent": head_percent,
            "head": ranked[:n_head], "tail": ranked[n_head:], "names": names,
            "train_counts": train, "test_counts": test}


def same_split(a: dict, b: dict) -> bool:
    """Equal but perhaps for where the data root lies (a copied or moved root keeps its split)."""
    return {k: v for k, v in a.items() if k != "root"} == {k: v for k, v in b.items() if k != "root"}


@cli
def main(args):
    split = make_split(args.data_root, args.head_percent)
    out = args.out or os.path.join(args.data_root, "split.json")
    split["root"] = relative(args.data_root, os.path.dirname(os.path.abspath(out)))
    if os.path.exists(out) and not args.overwrite:
        try:
            with open(out) as f:
                old = json.load(f)
            unchanged = isinstance(old, dict) and same_split(old, json.loads(json.dumps(split)))
        except (OSError, ValueError):
            unchanged = False
        if not unchanged:
            raise UserError(f"{out} exists and holds another split; pass --overwrite to replace it (models "
                            f"trained on the old split will no longer match) or choose another --out")
    with open(out, "w") as f:
        json.dump(split, f, indent=1)
    names, counts = split["names"], split["train_counts"]
    for part in ("head", "tail"):
        print(f"{part} ({len(split[part])}): " + ", ".join(f"{c} {names[c]} ({counts[c]})"
                                                           for c in split[part]))
    print(f"wrote {out} (from {anno_path(args.data_root, 'train')})")


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "split"))
