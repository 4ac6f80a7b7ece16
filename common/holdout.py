"""A validation list carved from a training list, for choosing settings without the test set.

Per class, a seeded random `fraction` of its images (at least one, at most `max_per_class`) is held out, and
at least one image stays for training; a class with one image keeps it. The held-out share of every class is
about the same, so the held-out list is long-tailed like the training list; settings are chosen on it by mean
per-class accuracy, which weighs every class alike.
"""
import os

import numpy as np

from common.layout import read_list


def carve(items: list, fraction: float = 0.2, max_per_class: int = 20, seed: int = 0) -> tuple:
    """(train, held_out) from [(path, label)]: disjoint, together the input, each in the input's order."""
    rng = np.random.default_rng(seed)
    labels = np.array([label for _, label in items])
    held = set()
    for c in np.unique(labels):
        ix = np.flatnonzero(labels == c)
        k = min(max(1, round(fraction * len(ix))), max_per_class, len(ix) - 1)
        held.update(rng.permutation(ix)[:k].tolist())
    return ([it for i, it in enumerate(items) if i not in held],
            [it for i, it in enumerate(items) if i in held])


def without(items: list, held_out: list) -> list:
    """items less those of held_out (compared by resolved path)."""
    drop = {os.path.normpath(p) for p, _ in held_out}
    return [it for it in items if os.path.normpath(it[0]) not in drop]


def write_list(path: str, items: list, image_dir: str) -> None:
    """An annotation list with absolute paths (readable whatever image folder the reader joins them to)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # two benchmark runs may write the same list at once
    with open(tmp, "w") as f:
        f.writelines(f"{os.path.normpath(os.path.join(os.path.abspath(image_dir), rel))} {label}\n"
                     for rel, label in items)
    os.replace(tmp, path)


def carve_lists(train_list: str, image_dir: str, out_dir: str, held_out_list: str | None = None,
                fraction: float = 0.2, max_per_class: int = 20, seed: int = 0) -> tuple:
    """Write <out_dir>/train.txt and <out_dir>/val.txt; val is `held_out_list` if given, else carved from
    `train_list`. Returns their paths."""
    items = [(os.path.join(os.path.abspath(image_dir), p), y) for p, y in read_list(train_list)]
    if held_out_list:
        held = [(os.path.join(os.path.abspath(image_dir), p), y) for p, y in read_list(held_out_list)]
        train = without(items, held)
    else:
        train, held = carve(items, fraction, max_per_class, seed)
    paths = os.path.join(out_dir, "train.txt"), os.path.join(out_dir, "val.txt")
    write_list(paths[0], train, image_dir)
    write_list(paths[1], held, image_dir)
    return paths
