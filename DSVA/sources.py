"""Zero-shot data sources for DSVA: where the images, the seen/unseen split and any shipped attributes come
from (the matrix files themselves: DSVA/attributes.py; torch data: DSVA/episodes.py).

Three sources (--dataset), all ending in the same `ZslData` (class names, seen and unseen class ids, image
lists of global class ids):

- rssdivcs: the released RSSDIVCS files. <root>/files/<split>_images.mat holds `image_files`
  (paths containing 'RSSDIVCS/', re-rooted at --image-root) and `labels` (1-based class ids);
  <root>/files/ann_attr_finetune_<split>_splits.mat holds the 1-based image indices `train_zsl_loc_<id>`,
  `train_gzsl_loc_<id>`, `test_seen_loc_<id>`, `test_unseen_loc_<id>`, `allclasses_names` and the class x
  attribute matrix `att` stored attributes x classes. Splits: 61 (60 seen / 10 unseen), 52 (50/20), 43
  (40/30).
- layout: a processed data root (classes.json + anno lists, e.g. the embedded data set). Seen/unseen classes
  come from classes.json "zsl_splits"[--split] or from --split-file; the train list's images of seen classes
  are trained on, the test list gives the seen and unseen test images.
- folders: <root>/<class name>/<images> (UCM, AID, NWPU-RESISC45 as downloaded) with a --split-file; a fixed
  fraction (--test-fraction) of every seen class's images is held out as its test images.

A split file is JSON {"seen": [...], "unseen": [...]} of class names or ids.
"""
import argparse
import os
from dataclasses import dataclass, field

import numpy as np

from common.errors import UserError
from common.jsonfile import read_json
from common.layout import anno_path, read_classes, read_list
from DSVA.attributes import groups_to_indices, load_attributes, read_groups
from DSVA.matfile import mat_key, mat_strings, read_mat

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
RSSDIVCS_MARKER = "RSSDIVCS/"


@dataclass
class ZslData:
    dataset: str
    names: list  # every class, index = global class id
    seen: list  # sorted global ids
    unseen: list
    train: list  # [(image path, global id)], seen classes only
    test_seen: list
    test_unseen: list
    attributes: np.ndarray | None = None  # [classes, attributes] shipped with the data, if any
    attribute_names: list | None = None
    attribute_groups: dict | None = None  # group name -> attribute indices
    notes: list = field(default_factory=list)  # facts a user should see (leakage checks, fallbacks)


# ---------------------------------------------------------------------------------------------- arguments

def add_data_args(parser: argparse.ArgumentParser, split_default="43"):
    """Adds the data options; returns the argument group (its actions name the options)."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default="layout", choices=["layout", "folders", "rssdivcs"],
                   help="layout: processed data root (classes.json); folders: <root>/<class>/<images>; "
                        "rssdivcs: the released RSSDIVCS folder (files/*.mat)")
    g.add_argument("--data-root", default=None, help="data root (for rssdivcs: the RSSDIVCS folder)")
    g.add_argument("--split", default=split_default,
                   help="zero-shot split: 61 (60/10), 52 (50/20) or 43 (40/30) for RSSDIVCS; a key of "
                        "classes.json zsl_splits for a layout root")
    g.add_argument("--split-file", default=None,
                   help='JSON {"seen": [...], "unseen": [...]} of class names or ids (folders; optional for '
                        'layout)')
    g.add_argument("--split-id", type=int, default=0,
                   help="rssdivcs: which random split of the .mat (upstream: 0)")
    g.add_argument("--images-mat", default=None, help="rssdivcs (default: <root>/files/<split>_images.mat)")
    g.add_argument("--splits-mat", default=None,
                   help="rssdivcs (default: <root>/files/ann_attr_finetune_<split>_splits.mat)")
    g.add_argument("--image-root", default=None,
                   help="rssdivcs: folder that replaces everything up to 'RSSDIVCS/' in the .mat's image "
                        "paths (default: --data-root)")
    g.add_argument("--train-loc", default="zsl", choices=["zsl", "gzsl"],
                   help="rssdivcs: train on train_zsl_loc (upstream, in ZSL and GZSL runs) or train_gzsl_loc")
    g.add_argument("--test-fraction", type=float, default=0.2,
                   help="folders: fraction of every seen class's images held out as its test images")
    g.add_argument("--attributes", default=None,
                   help="class x attribute matrix: annotate.py's attributes.json/.npy, or a .mat with 'att' "
                        "(e.g. RSSDIVCS ann_attr_finetune_*.mat); default: the data's own (RSSDIVCS 'att', "
                        "classes.json class_attributes)")
    g.add_argument("--attribute-groups", default=None,
                   help='JSON {group: [attribute indices or names]} (default: with the attributes, or '
                        'RSSDIVCS files/attri_group_3.json)')
    return g


def load_zsl_data(args, require_attributes: bool = True) -> ZslData:
    if not args.data_root and not (args.dataset == "rssdivcs" and args.images_mat and args.splits_mat):
        raise UserError("--data-root is required (or set data_root in the config's section)")
    if args.dataset == "rssdivcs":
        data = load_rssdivcs(args.data_root, args.split, args.image_root, args.images_mat, args.splits_mat,
                             args.split_id, args.train_loc)
    elif args.dataset == "layout":
        data = load_layout(args.data_root, args.split, args.split_file)
    else:
        if not args.split_file:
            raise UserError("--dataset folders needs --split-file (JSON with the seen and unseen class "
                            "names)")
        data = load_folders(args.data_root, args.split_file, args.test_fraction, getattr(args, "seed", 0))
    if args.attributes:
        matrix, attr_names, groups = load_attributes(args.attributes, data.names)
        data.attributes, data.attribute_names, data.attribute_groups = matrix, attr_names, groups
    if data.attributes is None and require_attributes:
        raise UserError(f"{args.data_root} ships no class attributes; pass --attributes (annotate.py's "
                        f"attributes.json)")
    groups_file = args.attribute_groups or _default_groups_file(args)
    if groups_file and data.attributes is not None:
        data.attribute_groups = read_groups(groups_file, data.attribute_names, data.attributes.shape[1])
    if data.attributes is not None:
        check_attribute_width(data, args.attributes or f"{args.data_root}/classes.json")
    return data


def check_attribute_width(data: ZslData, source: str) -> None:
    """Attribute names and groups must describe the matrix's columns (else the group lasso indexes past them
    and training without it goes on with names that label other columns)."""
    width = data.attributes.shape[1]
    names = data.attribute_names
    if names is not None and len(names) != width:
        raise UserError(f"{source} names {len(names)} attributes but its matrix has {width} columns; re-run "
                        f"DSVA/annotate.py or fix the file")
    for group, ids in (data.attribute_groups or {}).items():
        bad = [i for i in ids if not 0 <= i < width]
        if bad:
            raise UserError(f"{source}: attribute group '{group}' holds index {bad[0]}, outside the matrix's "
                            f"{width} columns (0..{width - 1}); re-run DSVA/annotate.py or fix the groups")


def _default_groups_file(args):
    """attri_groups.json / attri_group_3.json beside a .mat or .npy --attributes, or RSSDIVCS's own file."""
    candidates = []
    if args.attributes and not args.attributes.endswith(".json"):
        folder = os.path.dirname(os.path.abspath(args.attributes))
        candidates += [os.path.join(folder, "attri_groups.json"), os.path.join(folder, "attri_group_3.json")]
    if args.dataset == "rssdivcs" and args.data_root and not args.attributes:
        candidates.append(os.path.join(args.data_root, "files", "attri_group_3.json"))
    return next((c for c in candidates if os.path.isfile(c)), None)


# ---------------------------------------------------------------------------------------------- RSSDIVCS

def mat_locations(mat: dict, key: str, path: str, num_images: int) -> np.ndarray:
    """1-based MATLAB indices -> 0-based numpy indices, checked against the number of images."""
    loc = np.asarray(mat_key(mat, key, path)).astype(np.int64).ravel()
    if loc.size and (loc.min() < 1 or loc.max() > num_images):
        raise UserError(f"{path}: '{key}' holds indices {loc.min()}..{loc.max()}, outside 1..{num_images} "
                        f"(1-based); the images .mat and the splits .mat do not belong together")
    return loc - 1


def reroot(path: str, image_root: str) -> str:
    """Upstream re-rooting: the part after the first 'RSSDIVCS/' joined to the local image root."""
    path = path.replace("\\", "/")
    if RSSDIVCS_MARKER in path:
        return os.path.join(image_root, path.split(RSSDIVCS_MARKER, 1)[1])
    return path if os.path.isabs(path) else os.path.join(image_root, path)


def rssdivcs_files(root, split: str, images_mat=None, splits_mat=None) -> tuple:
    files = os.path.join(root or "", "files")
    return (images_mat or os.path.join(files, f"{split}_images.mat"),
            splits_mat or os.path.join(files, f"ann_attr_finetune_{split}_splits.mat"))


def rssdivcs_images(images_mat: str, spl: dict, splits_mat: str, image_root: str) -> tuple:
    """(class names, re-rooted image paths, 0-based labels) of every image of the release."""
    img = read_mat(images_mat, "RSSDIVCS images file")
    paths = [reroot(p, image_root) for p in mat_strings(mat_key(img, "image_files", images_mat))]
    labels = np.asarray(mat_key(img, "labels", images_mat)).astype(np.int64).ravel() - 1
    if len(paths) != len(labels):
        raise UserError(f"{images_mat}: {len(paths)} image_files but {len(labels)} labels")
    names = mat_strings(mat_key(spl, "allclasses_names", splits_mat))
    if labels.min() < 0 or labels.max() >= len(names):
        raise UserError(f"{images_mat}: labels span {labels.min() + 1}..{labels.max() + 1} (1-based) but "
                        f"{splits_mat} names {len(names)} classes")
    return names, paths, labels


def load_rssdivcs(root, split: str, image_root=None, images_mat=None, splits_mat=None, split_id: int = 0,
                  train_loc: str = "zsl") -> ZslData:
    images_mat, splits_mat = rssdivcs_files(root, split, images_mat, splits_mat)
    spl = read_mat(splits_mat, "RSSDIVCS splits file")
    names, paths, labels = rssdivcs_images(images_mat, spl, splits_mat, image_root or root)
    loc = {k: mat_locations(spl, f"{k}_loc_{split_id}", splits_mat, len(paths))
           for k in ("train_zsl", "train_gzsl", "test_seen", "test_unseen")}
    att = np.asarray(mat_key(spl, "att", splits_mat), dtype=np.float32)
    if att.ndim != 2 or len(names) not in att.shape:
        raise UserError(f"{splits_mat}: 'att' has shape {att.shape}, expected attributes x {len(names)} "
                        "classes")
    att = att.T if att.shape[1] == len(names) else att  # stored attributes x classes

    def items(key):
        return [(paths[i], int(labels[i])) for i in loc[key]]

    train = items(f"train_{train_loc}")
    test_seen, test_unseen = items("test_seen"), items("test_unseen")
    check_files(train + test_seen + test_unseen, f"images listed in {images_mat}", "--image-root")
    seen = sorted({y for _, y in train})
    unseen = sorted({y for _, y in test_unseen})
    notes = []
    overlap = len(set(loc[f"train_{train_loc}"].tolist()) & set(loc["test_seen"].tolist()))
    notes.append(f"train_{train_loc}_loc_{split_id} shares {overlap} of {len(test_seen)} images with "
                 f"test_seen_loc_{split_id}" + (" (GZSL seen accuracy is measured partly on training images)"
                                                if overlap else ""))
    gzsl_seen = sorted({int(labels[i]) for i in loc["train_gzsl"]})
    if gzsl_seen != seen:
        notes.append(f"train_gzsl_loc names {len(gzsl_seen)} seen classes, train_{train_loc}_loc {len(seen)}")
    if set(seen) & set(unseen):
        raise UserError(f"{splits_mat}: classes {sorted(set(seen) & set(unseen))} are both seen and unseen")
    return ZslData("RSSDIVCS", names, seen, unseen, train, test_seen, test_unseen, att, None, None, notes)


def check_files(items: list, what: str, flag: str) -> None:
    missing = [p for p, _ in items if not os.path.isfile(p)]
    if missing:
        raise UserError(f"{len(missing)} of {len(items)} {what} do not exist (e.g. {missing[0]}); check "
                        f"{flag}")


# ---------------------------------------------------------------------------------------------- split files

def read_split_file(path: str, names: list) -> tuple:
    """(seen ids, unseen ids) from JSON {"seen": [...], "unseen": [...]} of class names or ids."""
    doc = read_json(path, "split file")
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("seen", "unseen")):
        raise UserError(f'split file {path} must be {{"seen": [...], "unseen": [...]}}')
    return resolve_classes(doc["seen"], doc["unseen"], names, f"split file {path}")


def resolve_classes(seen, unseen, names: list, source: str) -> tuple:
    index = {n: i for i, n in enumerate(names)}
    unknown = [str(c) for c in list(seen) + list(unseen)
               if not (c in index or (isinstance(c, int) and 0 <= c < len(names)))]
    if unknown:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise UserError(f"{source} names unknown classes {', '.join(repr(u) for u in unknown[:5])}; "
                        f"known classes: {shown}")
    ids = [sorted({index[c] if c in index else int(c) for c in group}) for group in (seen, unseen)]
    both = set(ids[0]) & set(ids[1])
    if both:
        raise UserError(f"{source}: classes {', '.join(names[i] for i in sorted(both))} are both seen and "
                        "unseen")
    if not ids[0] or not ids[1]:
        raise UserError(f"{source} needs at least one seen and one unseen class")
    return ids[0], ids[1]


# ------------------------------------------------------------------------------------------- layout / folders

def load_layout(root: str, split: str, split_file=None) -> ZslData:
    info = read_classes(root)
    names = info["names"]
    if split_file:
        seen, unseen = read_split_file(split_file, names)
    else:
        splits = info.get("zsl_splits") or {}
        if str(split) not in splits:
            raise UserError(f"{root}/classes.json has no zero-shot split '{split}' (has: "
                            f"{', '.join(splits) or 'none'}); pass one of them to --split or give "
                            "--split-file")
        s = splits[str(split)]
        seen, unseen = resolve_classes(s["seen"], s["unseen"], names, f"{root}/classes.json split {split}")
    lists = {}
    for part in ("train", "test"):
        path = anno_path(root, part)
        lists[part] = [(rel if os.path.isabs(rel) else os.path.join(root, part, rel), y)
                       for rel, y in read_list(path, len(names))]
    seen_set, unseen_set = set(seen), set(unseen)
    train = [it for it in lists["train"] if it[1] in seen_set]
    test_seen = [it for it in lists["test"] if it[1] in seen_set]
    test_unseen = [it for it in lists["test"] if it[1] in unseen_set]
    for what, items in (("train", train), ("seen test", test_seen), ("unseen test", test_unseen)):
        if not items:
            raise UserError(f"{root}: no {what} images for split {split}; check the annotation lists")
    check_files(train + test_seen + test_unseen, f"images listed under {root}/anno", "the data root")
    att, attr_names, groups = None, None, None
    if "class_attributes" in info:
        att = np.asarray(info["class_attributes"], dtype=np.float32)
        attr_names = info.get("attributes")
        if info.get("attribute_groups") and attr_names:
            groups = groups_to_indices(info["attribute_groups"], attr_names, f"{root}/classes.json")
    return ZslData(info["dataset"], names, seen, unseen, train, test_seen, test_unseen, att, attr_names,
                   groups)


def folder_classes(root: str) -> list:
    if not os.path.isdir(root):
        raise UserError(f"data root {root} does not exist")
    names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                   and not d.startswith("."))
    if not names:
        raise UserError(f"{root} has no class folders; expected <root>/<class name>/<images>")
    return names


def folder_images(root: str, names: list) -> list:
    items = []
    for cid, name in enumerate(names):
        files = sorted(f for f in os.listdir(os.path.join(root, name))
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        items += [(os.path.join(root, name, f), cid) for f in files]
    return items


def load_folders(root: str, split_file: str, test_fraction: float, seed: int = 0) -> ZslData:
    names = folder_classes(root)
    seen, unseen = read_split_file(split_file, names)
    if not 0 < test_fraction < 1:
        raise UserError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    items = folder_images(root, names)
    rng = np.random.default_rng(seed)
    train, test_seen = [], []
    for c in seen:
        own = [it for it in items if it[1] == c]
        if len(own) < 2:
            raise UserError(f"class folder {os.path.join(root, names[c])} has {len(own)} images; a seen "
                            f"class needs at least 2 (train and test)")
        order = rng.permutation(len(own))
        n_test = min(len(own) - 1, max(1, round(test_fraction * len(own))))
        test_seen += [own[i] for i in sorted(order[:n_test])]
        train += [own[i] for i in sorted(order[n_test:])]
    test_unseen = [it for it in items if it[1] in set(unseen)]
    if not test_unseen:
        raise UserError(f"the unseen class folders of {split_file} hold no images")
    return ZslData(os.path.basename(os.path.normpath(root)), names, seen, unseen, train, test_seen,
                   test_unseen)


def load_pool(args, pool: str = "train") -> tuple:
    """(data set name, class names, [(path, class id)]) of the images attributes are annotated from: every
    class, seen or unseen (the paper annotates all classes from their images)."""
    if args.dataset == "rssdivcs":
        images_mat, splits_mat = rssdivcs_files(args.data_root, args.split, args.images_mat, args.splits_mat)
        spl = read_mat(splits_mat, "RSSDIVCS splits file")
        names, paths, labels = rssdivcs_images(images_mat, spl, splits_mat, args.image_root or args.data_root)
        items = [(p, int(y)) for p, y in zip(paths, labels)]
        dataset = "RSSDIVCS"
    elif args.dataset == "layout":
        info = read_classes(args.data_root)
        names, dataset, items = info["names"], info["dataset"], []
        for part in ("train", "test") if pool == "all" else (pool,):
            items += [(rel if os.path.isabs(rel) else os.path.join(args.data_root, part, rel), y)
                      for rel, y in read_list(anno_path(args.data_root, part), len(names))]
    else:
        names = folder_classes(args.data_root)
        items = folder_images(args.data_root, names)
        dataset = os.path.basename(os.path.normpath(args.data_root))
    return dataset, names, items


# ------------------------------------------------------------------------------------------- validation split

def carve_validation(train: list, seen: list, val_classes: int, val_fraction: float, seed: int,
                     fold: int = 0) -> dict:
    """Honest model selection: hold out `val_classes` seen classes as pseudo-unseen classes and `val_fraction`
    of the remaining classes' training images as pseudo-seen test images. Only seen classes' training images
    are read. Fold k holds out the k-th group of `val_classes` classes of a seeded order of the seen classes
    (fold 0: a seeded draw, the rest of the order follows it; groups wrap around), so folds 0..K-1 hold out
    different classes while K * val_classes <= the number of seen classes."""
    if not 0 < val_classes < len(seen) - 1:
        raise UserError(f"--val-classes must be between 1 and {len(seen) - 2} for {len(seen)} seen classes")
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if fold < 0:
        raise UserError(f"--val-fold must be at least 0, got {fold}")
    rng = np.random.default_rng(seed)
    first = [int(c) for c in rng.choice(seen, val_classes, replace=False)]
    rest = [int(c) for c in np.random.default_rng([seed, 1]).permutation([c for c in seen if c not in first])]
    order = first + rest
    held = sorted(order[(fold * val_classes + j) % len(order)] for j in range(val_classes))
    kept = [c for c in seen if c not in held]
    new_train, val_seen = [], []
    for c in kept:
        own = [it for it in train if it[1] == c]
        n_val = round(val_fraction * len(own)) if len(own) > 1 else 0
        order = rng.permutation(len(own))
        val_seen += [own[i] for i in sorted(order[:n_val])]
        new_train += [own[i] for i in sorted(order[n_val:])]
    val_unseen = [it for it in train if it[1] in set(held)]
    return {"train": new_train, "train_classes": kept, "val_classes": held, "val_seen": val_seen,
            "val_unseen": val_unseen}
