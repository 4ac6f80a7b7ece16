"""Build the embedded data set: long-tailed aerial-style object chips in the processed TGN layout.

    python data/synthetic/prepare.py --out data/synthetic/processed

Train counts follow n_max * R^(-i/(C-1)) over a fixed random order of the classes (so head classes are not
simply the first ids); the test split is balanced. Deterministic for a given seed and arguments.
"""
import argparse
import json
import os
import shutil

import numpy as np
from PIL import Image
from tqdm import tqdm

from common.errors import UserError, cli
from common.layout import write_layout
from data.synthetic.render import (
    ATTRIBUTE_GROUPS,
    CATALOG,
    attribute_names,
    attribute_prompt,
    caption,
    class_attribute_matrix,
    render,
)

# zero-shot splits named like the paper's files (61 = 60 seen / 10 unseen of 70, ...): seen fraction of
# classes
ZSL_SPLITS = {"61": 6 / 7, "52": 5 / 7, "43": 4 / 7}


def get_args_parser():
    p = argparse.ArgumentParser("Embedded synthetic data set", add_help=True)
    p.add_argument("--output-dir", required=True, help="output data root")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", type=int, default=12, help=f"number of classes, 10..{len(CATALOG)}")
    p.add_argument("--imbalance", type=float, default=100.0,
                   help="ratio of the largest to the smallest train class")
    p.add_argument("--n-max", type=int, default=500, help="train images of the largest class")
    p.add_argument("--n-test", type=int, default=50, help="test images per class (balanced)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--overwrite", action="store_true", help="replace an existing data set in --out")
    return p


def long_tail_counts(n_max: int, imbalance: float, num_classes: int) -> list:
    return [max(1, round(n_max * imbalance ** (-i / (num_classes - 1)))) for i in range(num_classes)]


def zsl_splits(attrs: np.ndarray, rng: np.random.Generator) -> dict:
    """Nested unseen sets (unseen of 61 within 52 within 43) in which every attribute of an unseen class
    also belongs to some seen class, so that unseen classes can be described by what was seen."""
    c = len(attrs)
    for _ in range(1000):
        order = [int(i) for i in rng.permutation(c)]
        splits = {}
        for tag, seen_frac in ZSL_SPLITS.items():
            n_unseen = c - round(c * seen_frac)
            unseen = sorted(order[:n_unseen])
            seen = sorted(order[n_unseen:])
            splits[tag] = {"seen": seen, "unseen": unseen}
        worst = splits["43"]
        if np.all(attrs[worst["seen"]].max(0) >= attrs[worst["unseen"]].max(0)):
            return splits
    raise RuntimeError("no zero-shot split found whose unseen attributes are all seen")


@cli
def main(args):
    if not 10 <= args.classes <= len(CATALOG):
        raise UserError(f"--classes must be between 10 and {len(CATALOG)}, got {args.classes}")
    if os.path.isdir(args.output_dir) and any(os.scandir(args.output_dir)):
        if not args.overwrite:
            raise UserError(f"{args.output_dir} is not empty; pass --overwrite to replace it or choose "
                            "another --output-dir")
        shutil.rmtree(args.output_dir)
    rng = np.random.default_rng(args.seed)
    classes = sorted(CATALOG[: args.classes])  # ids in alphabetical order of names, as upstream
    names = [n for n, _ in classes]
    matrix = class_attribute_matrix(classes)
    frequency_order = rng.permutation(args.classes)
    train_counts = [0] * args.classes
    for rank, cid in enumerate(frequency_order):
        train_counts[cid] = long_tail_counts(args.n_max, args.imbalance, args.classes)[rank]

    entries, captions = {"train": [], "test": []}, []
    jobs = [(split, cid, k) for cid in range(args.classes) for split, n in
            (("train", train_counts[cid]), ("test", args.n_test)) for k in range(n)]
    for split, cid, k in tqdm(jobs, desc="render", leave=False):
        folder = os.path.join(args.output_dir, split, str(cid))
        os.makedirs(folder, exist_ok=True)
        fname = f"{k:05d}.jpg"
        Image.fromarray(render(classes[cid][1], args.size, rng)).save(os.path.join(folder, fname), quality=95)
        entries[split].append((cid, fname))
        captions.append({"split": split, "path": f"{cid}/{fname}", "label": cid,
                         "attributes": list(classes[cid][1]),
                         "caption": caption(names[cid], classes[cid][1], rng)})

    extra = {"attributes": attribute_names(), "attribute_groups": ATTRIBUTE_GROUPS,
             "attribute_prompts": {a: [attribute_prompt(a, g)] for g, attrs in ATTRIBUTE_GROUPS.items()
                                   for a in attrs},
             "class_attributes": matrix.astype(int).tolist(), "zsl_splits": zsl_splits(matrix, rng),
             "image_size": args.size, "seed": args.seed}
    write_layout(args.output_dir, "SYNTH", names, entries, extra)
    with open(os.path.join(args.output_dir, "captions.jsonl"), "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in captions)
    print(f"wrote {len(entries['train'])} train and {len(entries['test'])} test images of {args.classes} "
          f"classes to {args.output_dir}")
    for cid in np.argsort(-np.array(train_counts), kind="stable"):
        print(f"  {cid:3d} {names[cid]:<20s} train {train_counts[cid]:5d}  test {args.n_test}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
