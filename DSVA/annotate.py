"""Annotate a class x attribute matrix with CLIP (the paper's machine-annotated "RSMM attributes").

    python DSVA/annotate.py --dataset rssdivcs --data-root RSSDIVCS --clip-model ViT-B-32 \
        --clip-pretrained checkpoints/clip-rsicd --output-dir runs/dsva_annotate/rssdivcs
    python DSVA/annotate.py --config configs/synthetic.yaml  (the embedded data set and its small CLIP)
    python DSVA/annotate.py --from-mat RSSDIVCS/files/ann_attr_finetune_43_splits.mat \
        --output-dir ...  (released)

The paper's exact recipe was not released. Ours, the default (every step is a flag):
1. prompts: each attribute of the vocabulary (DSVA/vocabulary.json: 100 attributes in the paper's three groups
   functions / materials / surface_properties) in each of its group's templates (--prompt-template overrides
   them; a vocabulary's own per-attribute prompts replace them); the L2-normalised text embeddings are
   averaged over templates and re-normalised (CLIP's prompt ensembling);
2. images: up to --images-per-class images of every class, seen or unseen (random, seeded), through CLIP's own
   preprocessing;
3. scores: cosine similarity of every image with every attribute, aggregated per class (--aggregate mean);
4. normalisation per attribute across classes (--normalize minmax: (s - min) / (max - min)).

Writes to --output-dir: attributes.json (classes, attributes, groups, matrix, recipe), attributes.npy
([classes, attributes]), attributes.mat (upstream layout: `att` attributes x classes, `allclasses_names`,
`attri_name`), attri_groups.json (upstream layout: group -> attribute indices) and attributes.png (the matrix
as a heat map). DSVA/train.py reads any of the first three with --attributes. attributes.json is written last:
run again, a finished folder with the same settings is left as it is, an unfinished one is annotated again.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from common import finished
from common.clip import add_clip_args, encode_text_prompts, load_clip, pretrained_or_random
from common.config import add_config_arg, parse_args
from common.datasets import ImageList
from common.errors import UserError, cli
from common.jsonfile import read_json
from common.layout import read_classes
from common.options import add_device_arg, add_loader_args, add_output_arg
from DSVA.attributes import load_attributes, read_groups
from DSVA.matfile import mat_strings, read_mat
from DSVA.model import PAPER_CLIP, PAPER_CLIP_NOTE
from DSVA.sources import load_pool

DEFAULT_VOCABULARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vocabulary.json")


def get_args_parser():
    p = argparse.ArgumentParser("CLIP attribute annotation for DSVA")
    add_config_arg(p)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="layout", choices=["layout", "folders", "rssdivcs"],
                   help="layout: processed data root; folders: <root>/<class>/<images>; rssdivcs: the "
                        "RSSDIVCS folder")
    g.add_argument("--data-root", default=None, help="data root")
    g.add_argument("--split", default="43", help="rssdivcs: whose <split>_images.mat lists the images")
    g.add_argument("--images-mat", default=None, help="rssdivcs (default: <root>/files/<split>_images.mat)")
    g.add_argument("--splits-mat", default=None,
                   help="rssdivcs: holds the class names "
                        "(default: <root>/files/ann_attr_finetune_<split>_splits.mat)")
    g.add_argument("--image-root", default=None, help="rssdivcs: where 'RSSDIVCS/' paths are re-rooted")
    g.add_argument("--pool", default="train", choices=["train", "all"],
                   help="layout: images of the train list, or of train and test lists")
    g.add_argument("--images-per-class", type=int, default=50, help="images scored per class (all if fewer)")
    g = p.add_argument_group("vocabulary and prompts")
    g.add_argument("--vocabulary", default=DEFAULT_VOCABULARY,
                   help="vocabulary JSON ({'groups': {group: [attributes]}, 'templates': [..] or "
                        "{group: [..]}}), "
                        "or 'data' for the data root's classes.json attributes and attribute_groups")
    g.add_argument("--prompt-template", "--templates", dest="templates", nargs="+", default=None,
                   help="prompt templates with {} for the attribute, used for every attribute (overrides the "
                        "vocabulary's templates and prompts)")
    g.add_argument("--vocabulary-prompts", "--synthetic-prompts", dest="vocabulary_prompts",
                   action="store_true",
                   help="require the vocabulary's own prompt for every attribute (a JSON's 'prompts', "
                        "classes.json's 'attribute_prompts': the embedded set's are phrased like its CLIP's "
                        "captions)")
    g = p.add_argument_group("recipe")
    g.add_argument("--aggregate", default="mean", choices=["mean", "median", "max"],
                   help="how a class's image-attribute similarities become one score")
    g.add_argument("--normalize", default="minmax", choices=["minmax", "zscore", "none"],
                   help="per attribute across classes")
    g = p.add_argument_group("CLIP")
    add_clip_args(g, "ViT-B-32", PAPER_CLIP, pretrained_note=PAPER_CLIP_NOTE)
    g = p.add_argument_group("released matrix")
    g.add_argument("--from-mat", default=None,
                   help="convert a released matrix (.mat with 'att', e.g. RSSDIVCS "
                        "ann_attr_finetune_43_splits.mat) "
                        "instead of annotating")
    g.add_argument("--attribute-names", default=None, help="--from-mat: text file, one attribute name per "
                                                           "line")
    g.add_argument("--attribute-groups", default=None,
                   help="--from-mat: JSON group -> attribute indices (RSSDIVCS files/attri_group_3.json)")
    g = p.add_argument_group("run")
    add_output_arg(g, default="runs/dsva_annotate/default")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output folder (a finished "
                   "one is otherwise left as it is)")
    g.add_argument("--seed", type=int, default=0, help="image sampling seed")
    g.add_argument("--batch-size", type=int, default=64)
    add_loader_args(g, workers=2, on_corrupt=False, eval_batch_size=False)
    add_device_arg(g)
    return p


# ---------------------------------------------------------------------------------------------- vocabulary

def read_vocabulary(path: str) -> tuple:
    """({group: [attribute]}, {group: [templates]}, {attribute: [prompts]}) from a vocabulary JSON."""
    doc = read_json(path, "vocabulary", "pass a JSON file or 'data'")
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, dict) or not groups or not all(isinstance(v, list) and v
                                                             for v in groups.values()):
        raise UserError(f"vocabulary {path} needs 'groups': {{group: [attribute, ...]}}")
    templates = doc.get("templates") or ["a remote sensing image of {}."]
    if isinstance(templates, list):
        templates = {g: templates for g in groups}
    missing = [g for g in groups if not templates.get(g, templates.get("default"))]
    if missing:
        raise UserError(f"vocabulary {path} has no templates for group(s) {', '.join(missing)}")
    templates = {g: templates.get(g, templates.get("default")) for g in groups}
    return groups, templates, own_prompts(doc, "prompts", path)


def own_prompts(doc: dict, key: str, path: str) -> dict:
    """A vocabulary's per-attribute prompts {attribute: [prompt, ...]} (used in place of its templates)."""
    prompts = doc.get(key) or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, list) and v
                                                and all(isinstance(s, str) for s in v)
                                                for v in prompts.values()):
        raise UserError(f"{path}: '{key}' must map each attribute to a list of prompts")
    return prompts


def data_vocabulary(root: str) -> tuple:
    info = read_classes(root)
    if not info.get("attributes"):
        raise UserError(f"{root}/classes.json has no 'attributes'; --vocabulary data needs them (or pass a "
                        "JSON)")
    groups = info.get("attribute_groups") or {"attributes": info["attributes"]}
    return (groups, {g: ["a remote sensing image of {}."] for g in groups},
            own_prompts(info, "attribute_prompts", f"{root}/classes.json"))


def attribute_prompts(groups: dict, templates: dict, override=None, own: dict | None = None,
                      require_own: bool = False) -> list:
    """[(attribute, group, [prompts])] in group order: the override templates, else the vocabulary's own
    prompts of the attribute, else its group's templates."""
    own = own or {}
    lacking = [a for attrs in groups.values() for a in attrs if a not in own]
    if require_own and lacking:
        raise UserError(f"--vocabulary-prompts: the vocabulary has no prompts for attribute(s) "
                        f"{', '.join(lacking[:5])}; for the embedded data set re-run "
                        "data/synthetic/prepare.py (it writes classes.json's attribute_prompts), or drop "
                        "the flag")
    out = []
    for g, attrs in groups.items():
        for a in attrs:
            if override:
                prompts = [t.format(a) for t in override]
            elif a in own:
                prompts = list(own[a])
            else:
                prompts = [t.format(a) for t in templates[g]]
            out.append((a, g, prompts))
    names = [a for a, _, _ in out]
    dupes = sorted({a for a in names if names.count(a) > 1})
    if dupes:
        raise UserError(f"the vocabulary lists attribute(s) {', '.join(dupes)} more than once")
    return out


# ---------------------------------------------------------------------------------------------- scoring

def sample_per_class(items: list, num_classes: int, k: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for c in range(num_classes):
        own = [it for it in items if it[1] == c]
        if own:
            keep = sorted(rng.choice(len(own), min(k, len(own)), replace=False))
            out += [own[i] for i in keep]
    return out


@torch.no_grad()
def image_embeddings(bundle, items: list, batch_size: int, workers: int, device) -> torch.Tensor:
    # every image counts for its own class: a corrupt one stops the run (skipping would shift the labels)
    images = ImageList(items=items, transform=bundle.preprocess, on_corrupt="error", check_files=False)
    loader = DataLoader(images, batch_size=batch_size, num_workers=workers)
    feats = []
    for x, _ in tqdm(loader, desc="images", leave=False, dynamic_ncols=True):
        feats.append(torch.nn.functional.normalize(bundle.model.encode_image(x.to(device)).float(),
                                                   dim=-1).cpu())
    return torch.cat(feats)


def text_embeddings(bundle, prompts: list) -> torch.Tensor:
    """[attributes, D]: per attribute the normalised mean of its prompts' normalised embeddings."""
    flat = [p for _, _, ps in prompts for p in ps]
    emb = encode_text_prompts(bundle, flat).cpu()
    out, i = [], 0
    for _, _, ps in prompts:
        out.append(torch.nn.functional.normalize(emb[i:i + len(ps)].mean(0), dim=-1))
        i += len(ps)
    return torch.stack(out)


def aggregate(similarity: np.ndarray, labels: np.ndarray, num_classes: int, how: str) -> np.ndarray:
    """[images, attributes] -> [classes, attributes]; a class without images gets NaN."""
    fn = {"mean": np.mean, "median": np.median, "max": np.max}[how]
    out = np.full((num_classes, similarity.shape[1]), np.nan, dtype=np.float64)
    for c in range(num_classes):
        if (labels == c).any():
            out[c] = fn(similarity[labels == c], axis=0)
    return out


def normalize(matrix: np.ndarray, how: str) -> np.ndarray:
    """Per attribute (column) across classes; a constant column becomes 0."""
    if how == "none":
        return matrix
    if how == "minmax":
        lo, hi = matrix.min(0, keepdims=True), matrix.max(0, keepdims=True)
        return np.divide(matrix - lo, hi - lo, out=np.zeros_like(matrix), where=(hi - lo) > 0)
    mu, sd = matrix.mean(0, keepdims=True), matrix.std(0, keepdims=True)
    return np.divide(matrix - mu, sd, out=np.zeros_like(matrix), where=sd > 0)


def agreement(matrix: np.ndarray, truth: np.ndarray) -> float | None:
    """Mean over attributes of the ROC AUC of the annotated scores against a binary class x attribute
    truth."""
    from sklearn.metrics import roc_auc_score
    aucs = [roc_auc_score(truth[:, j], matrix[:, j]) for j in range(truth.shape[1])
            if 0 < truth[:, j].sum() < len(truth)]
    return float(np.mean(aucs)) if aucs else None


# ---------------------------------------------------------------------------------------------- outputs

OUTPUTS = ("attributes.json", "attributes.npy", "attri_groups.json", "attributes.mat", "attributes.png")


def write_outputs(out: str, dataset: str, names: list, groups: dict, matrix: np.ndarray, recipe: dict,
                  settings: dict | None = None) -> None:
    """The matrix in every format; attributes.json last (with the command's settings): it marks the folder
    finished."""
    attr_names = [a for attrs in groups.values() for a in attrs]
    doc = {"dataset": dataset, "classes": names, "attributes": attr_names, "groups": groups,
           "matrix": np.round(matrix, 6).tolist(), "recipe": recipe, "settings": settings}
    np.save(os.path.join(out, "attributes.npy"), matrix.astype(np.float32))
    index = {a: i for i, a in enumerate(attr_names)}
    with open(os.path.join(out, "attri_groups.json"), "w") as f:
        json.dump({g: [index[a] for a in attrs] for g, attrs in groups.items()}, f, indent=1)
    try:
        import scipy.io
        scipy.io.savemat(os.path.join(out, "attributes.mat"),
                         {"att": matrix.T.astype(np.float64), "allclasses_names": _cell(names),
                          "attri_name": _cell(attr_names)})
    except ImportError:
        print("warning: scipy is not installed; attributes.mat not written", file=sys.stderr)
    heatmap_png(matrix, names, attr_names, os.path.join(out, "attributes.png"))
    finished.write_json_last(os.path.join(out, "attributes.json"), doc)


def _cell(strings: list) -> np.ndarray:
    arr = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        arr[i, 0] = s
    return arr


def heatmap_png(matrix: np.ndarray, names: list, attr_names: list, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    c, a = matrix.shape
    fig, ax = plt.subplots(figsize=(min(40, 0.16 * a + 3), min(30, 0.2 * c + 2)))
    im = ax.imshow(matrix, aspect="auto", cmap="viridis")
    ax.set_yticks(range(c), names, fontsize=6)
    ax.set_xticks(range(a), attr_names, rotation=90, fontsize=5)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def finished_before(args) -> bool:
    """True when --output-dir holds this command's finished result (attributes.json with these settings)."""
    return finished.already_finished(os.path.join(args.output_dir, "attributes.json"),
                                     finished.settings_of(args), args.overwrite)


def prepare_out(args) -> None:
    """An empty --output-dir; the files of an unfinished annotation there (no attributes.json) are
    replaced."""
    if os.path.isdir(args.output_dir) and any(os.scandir(args.output_dir)):
        ours = all(e.name in OUTPUTS or e.name.endswith(".tmp") for e in os.scandir(args.output_dir))
        if not (args.overwrite
                or (ours and not os.path.exists(os.path.join(args.output_dir, "attributes.json")))):
            raise UserError(f"output folder {args.output_dir} already exists; pass --overwrite or choose "
                            f"another --output-dir")
        shutil.rmtree(args.output_dir)
    os.makedirs(args.output_dir, exist_ok=True)


# ---------------------------------------------------------------------------------------------- main

def convert_released(args) -> None:
    """--from-mat: the released matrix in our formats (class names from the .mat or the data root)."""
    mat = read_mat(args.from_mat, "attributes file")
    if "allclasses_names" in mat:
        names = mat_strings(mat["allclasses_names"])
    elif args.data_root:
        names = load_pool(args)[1]
    else:
        raise UserError(f"{args.from_mat} holds no 'allclasses_names'; pass --data-root for the class names")
    matrix, attr_names, _ = load_attributes(args.from_mat, names)
    if args.attribute_names:
        if not os.path.isfile(args.attribute_names):
            raise UserError(f"attribute names file {args.attribute_names} does not exist")
        with open(args.attribute_names) as f:
            attr_names = [ln.strip() for ln in f if ln.strip()]
    attr_names = attr_names or [f"attribute_{i}" for i in range(matrix.shape[1])]
    if len(attr_names) != matrix.shape[1]:
        raise UserError(f"{len(attr_names)} attribute names for {matrix.shape[1]} attributes in "
                        f"{args.from_mat}")
    groups = {"attributes": list(range(matrix.shape[1]))}
    if args.attribute_groups:
        groups = read_groups(args.attribute_groups, attr_names, matrix.shape[1])
    grouped = [i for ids in groups.values() for i in ids]
    if sorted(grouped) != list(range(matrix.shape[1])):  # keep the matrix's own column order
        groups = {**groups, "ungrouped": [i for i in range(matrix.shape[1]) if i not in set(grouped)]}
        groups = {g: ids for g, ids in groups.items() if ids}
    order = [i for ids in groups.values() for i in ids]
    prepare_out(args)
    write_outputs(args.output_dir, "released", names,
                  {g: [attr_names[i] for i in ids] for g, ids in groups.items()},
                  matrix[:, order].astype(np.float64), {"source": os.path.abspath(args.from_mat)},
                  finished.settings_of(args))
    print(f"converted {args.from_mat}: {len(names)} classes x {matrix.shape[1]} attributes -> "
          f"{args.output_dir}")


@cli
def main(args):
    if args.output_dir and finished_before(args):
        return None
    if args.from_mat:
        return convert_released(args)
    if not args.data_root and not (args.images_mat and args.splits_mat):
        raise UserError("--data-root is required (or set data_root in the config's dsva_annotate section)")
    if args.images_per_class < 1:
        raise UserError(f"--images-per-class must be at least 1 (images scored per class), got "
                        f"{args.images_per_class}")
    if args.vocabulary == "data":
        groups, templates, own = data_vocabulary(args.data_root)
    else:
        groups, templates, own = read_vocabulary(args.vocabulary)
    prompts = attribute_prompts(groups, templates, args.templates, own, args.vocabulary_prompts)
    dataset, names, items = load_pool(args, args.pool)
    chosen = sample_per_class(items, len(names), args.images_per_class, args.seed)
    missing = [p for p, _ in chosen if not os.path.isfile(p)]
    if missing:
        raise UserError(f"{len(missing)} images to annotate from do not exist (e.g. {missing[0]}); check the "
                        f"data root / --image-root")
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    bundle = load_clip(args.clip_model, pretrained_or_random(args.clip_pretrained), device=device)
    prepare_out(args)
    print(f"{len(prompts)} attributes in {len(groups)} groups; {len(chosen)} images of {len(names)} classes; "
          f"e.g. prompt '{prompts[0][2][0]}'")
    img = image_embeddings(bundle, chosen, args.batch_size, args.workers, device)
    txt = text_embeddings(bundle, prompts)
    similarity = (img @ txt.T).numpy()
    labels = np.array([y for _, y in chosen])
    raw = aggregate(similarity, labels, len(names), args.aggregate)
    empty = [names[c] for c in range(len(names)) if np.isnan(raw[c]).any()]
    if empty:
        raise UserError(f"no images found for class(es) {', '.join(empty[:5])}; every class needs images")
    matrix = normalize(raw, args.normalize)
    recipe = {"clip_model": args.clip_model, "clip_pretrained": args.clip_pretrained,
              "prompts": {a: ps for a, _, ps in prompts}, "images_per_class": args.images_per_class,
              "pool": args.pool, "aggregate": args.aggregate, "normalize": args.normalize, "seed": args.seed,
              "score": "cosine similarity of L2-normalised CLIP image and (template-averaged) text "
                       "embeddings"}
    if args.dataset == "layout":
        info = read_classes(args.data_root)
        attr_names = [a for a, _, _ in prompts]
        if info.get("class_attributes") and info.get("attributes") == attr_names:
            recipe["auc_vs_classes_json"] = agreement(matrix, np.asarray(info["class_attributes"]))
            print(f"agreement with classes.json class_attributes: mean per-attribute ROC AUC "
                  f"{recipe['auc_vs_classes_json']:.3f}")
    write_outputs(args.output_dir, dataset, names, groups, matrix, recipe, finished.settings_of(args))
    print(f"wrote {len(names)} classes x {len(prompts)} attributes to "
          f"{args.output_dir}/attributes.{{json,npy,mat}}")


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "dsva_annotate"))
