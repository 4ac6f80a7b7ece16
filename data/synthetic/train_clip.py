"""Fit the small CLIP of data/synthetic/clip_model.py to the embedded data set, contrastively.

    python data/synthetic/train_clip.py --data data/synthetic/processed --out checkpoints/synth_clip.pt
    python data/synthetic/train_clip.py --data ... --out checkpoints/synth_clip_all.pt --all-classes

By default only the seen classes of zero-shot split --exclude-unseen (43, whose unseen set holds those of the
other splits) are trained on, so unseen classes stay unseen for DSVA; --all-classes is for TGN's CDTG.
Each image is paired with a caption composed afresh every time it is drawn. Batches draw classes uniformly
(the train split is long-tailed), then an image of the class, rotated by a multiple of 90 degrees and flipped.

Writes --out (an open_clip checkpoint that carries its config: common.clip.load_clip("synth-vit-tiny", out)),
and <out without extension>_report.json / _report.md: zero-shot top-1 with class prompts, and per-attribute
ROC AUC of attribute prompts against the class x attribute matrix, on the test split.
"""
import argparse
import json
import math
import os
import time

import numpy as np
import open_clip
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from common.checkpoint import atomic_save
from common.clip import checkpoint_dict, read_checkpoint
from common.config import add_config_arg, parse_args
from common.errors import UserError, cli
from common.layout import anno_path, read_classes, read_list
from data.synthetic.clip_model import (
    MODEL_NAME,
    build_model,
    class_attribute_dicts,
    class_prompt,
    described_class_prompt,
    make_caption,
    model_config,
)
from data.synthetic.render import attribute_prompt


def get_args_parser():
    p = argparse.ArgumentParser("Fit a small CLIP to the embedded data set", add_help=True)
    add_config_arg(p)
    p.add_argument("--data-root", required=True, help="processed data root written by "
                                                      "data/synthetic/prepare.py")
    p.add_argument("--out", required=True, help="checkpoint file to write (e.g. checkpoints/synth_clip.pt)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--exclude-unseen", default="43",
                       help="train on the seen classes of this zero-shot split of classes.json (61/52/43)")
    which.add_argument("--all-classes", action="store_true", help="train on every class (for TGN's CDTG)")
    p.add_argument("--init", default=None,
                   help="start from the weights of an earlier fit (e.g. the seen-classes CLIP for "
                        "--all-classes); its model size is used")
    p.add_argument("--image-size", type=int, default=0, help="model input size; 0 = the data's size")
    p.add_argument("--patch-size", type=int, default=16, help="ViT patch size (64 px / 16 = 16 image tokens)")
    p.add_argument("--width", type=int, default=128, help="width of both transformers")
    p.add_argument("--layers", type=int, default=3, help="layers of each transformer")
    p.add_argument("--embed-dim", type=int, default=128, help="joint embedding size")
    p.add_argument("--steps", type=int, default=500, help="optimisation steps")
    p.add_argument("--batch-size", type=int, default=64, help="image-caption pairs per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (cosine decay)")
    p.add_argument("--warmup", type=int, default=40, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay of matrices")
    p.add_argument("--sampling", default="balanced", choices=["balanced", "images"],
                   help="balanced: a uniform class, then one of its images; images: uniform over images")
    p.add_argument("--p-name", type=float, default=0.75, help="probability that a caption names the class")
    p.add_argument("--seed", type=int, default=0, help="seed of torch and of the caption generator")
    p.add_argument("--log-every", type=int, default=50, help="print the loss every this many steps")
    return p


# ---------------------------------------------------------------------------------------------- data

def training_classes(info: dict, exclude_unseen: str, all_classes: bool) -> tuple:
    """(classes trained on, seen classes, unseen classes) of zero-shot split `exclude_unseen`."""
    splits = info.get("zsl_splits") or {}
    if exclude_unseen not in splits:
        raise UserError(f"zero-shot split '{exclude_unseen}' is not in classes.json (has: "
                        f"{', '.join(splits) or 'none'}); pass one of them to --exclude-unseen")
    seen, unseen = sorted(splits[exclude_unseen]["seen"]), sorted(splits[exclude_unseen]["unseen"])
    train = list(range(len(info["names"]))) if all_classes else seen
    return train, seen, unseen


def load_images(root: str, split: str, classes: list, size: int) -> tuple:
    """(uint8 images [N, 3, size, size], labels [N]) of the listed classes of one split."""
    keep = set(classes)
    items = [(rel, y) for rel, y in read_list(anno_path(root, split), len(read_classes(root)["names"]))
             if y in keep]
    if not items:
        raise UserError(f"{anno_path(root, split)} lists no image of classes {sorted(keep)}")
    images = np.zeros((len(items), size, size, 3), dtype=np.uint8)
    for i, (rel, _) in enumerate(items):
        path = os.path.join(root, split, rel)
        if not os.path.isfile(path):
            raise UserError(f"image {path} listed in {anno_path(root, split)} does not exist; "
                            f"re-run prepare.py")
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BICUBIC)
            images[i] = np.asarray(im)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor([y for _, y in items])


class PairSampler:
    """Batches of (image indices, fresh captions) over the training images."""

    def __init__(self, labels: torch.Tensor, names: list, attributes: list, sampling: str, p_name: float,
                 seed: int):
        self.labels = labels.numpy()
        self.by_class = {int(c): np.flatnonzero(self.labels == c) for c in np.unique(self.labels)}
        self.names, self.attributes, self.sampling, self.p_name = names, attributes, sampling, p_name
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple:
        if self.sampling == "balanced":
            classes = list(self.by_class)
            picked = self.rng.choice(classes, size)
            idx = np.array([self.rng.choice(self.by_class[int(c)]) for c in picked])
        else:
            idx = self.rng.integers(0, len(self.labels), size)
        captions = [make_caption(self.names[y], self.attributes[y], self.rng, p_name=self.p_name)
                    for y in self.labels[idx]]
        return torch.from_numpy(idx), captions


def to_input(images: torch.Tensor, mean, std) -> torch.Tensor:
    x = images.float() / 255
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Aerial views have no up: a random multiple of 90 degrees and a random flip per image."""
    k = torch.randint(0, 4, (len(images),), generator=generator)
    flip = torch.rand(len(images), generator=generator) < 0.5
    out = images.clone()
    for r in range(4):
        for f in (False, True):
            sel = (k == r) & (flip == f)
            if sel.any():
                x = torch.rot90(images[sel], r, dims=(2, 3))
                out[sel] = torch.flip(x, dims=(3,)) if f else x
    return out


# ---------------------------------------------------------------------------------------------- training

def initial_weights(path: str) -> tuple:
    """(state_dict, model name, model config) of an earlier fit of this script, for --init."""
    if not os.path.isfile(path):
        raise UserError(f"--init {path} does not exist; fit a CLIP first (without --init)")
    state, name, cfg = read_checkpoint(path)
    if name != MODEL_NAME or not cfg:
        raise UserError(f"--init {path} is not a checkpoint of this script (model '{name}', not "
                        f"'{MODEL_NAME}')")
    return state, name, cfg


def make_optimizer(model, lr: float, weight_decay: float):
    """AdamW; no decay on gains, biases, embeddings and the temperature (open_clip's practice)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        excluded = p.ndim < 2 or "embedding" in name or "logit_scale" in name
        (no_decay if excluded else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6)


def lr_at(step: int, steps: int, warmup: int, peak: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_step(model, loss_fn, optimizer, images: torch.Tensor, tokens: torch.Tensor) -> float:
    model.train()
    img = model.encode_image(images, normalize=True)
    txt = model.encode_text(tokens, normalize=True)
    loss = loss_fn(img, txt, model.logit_scale.exp())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return loss.item()


# ---------------------------------------------------------------------------------------------- evaluation

@torch.no_grad()
def encode_images(model, images: torch.Tensor, mean, std, batch: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([model.encode_image(to_input(images[i:i + batch], mean, std), normalize=True)
                      for i in range(0, len(images), batch)])


@torch.no_grad()
def encode_texts(model, tokenizer, prompts: list) -> torch.Tensor:
    model.eval()
    return model.encode_text(tokenizer(prompts), normalize=True)


def zero_shot(image_feats, labels, prompt_feats, candidates: list, evaluated: list) -> float | None:
    """Top-1 accuracy on images of classes `evaluated`, choosing among classes `candidates`."""
    mask = torch.isin(labels, torch.tensor(evaluated))
    if not mask.any():
        return None
    cand = torch.tensor(candidates)
    pred = cand[(image_feats[mask] @ prompt_feats[cand].T).argmax(1)]
    return float((pred == labels[mask]).float().mean())


def attribute_aucs(image_feats, labels, attr_feats, matrix: np.ndarray, names: list) -> dict:
    """Per-attribute AUC of image-prompt similarity against the true attribute of each image's class."""
    sims = (image_feats @ attr_feats.T).numpy()
    truth = matrix[labels.numpy()]
    # AUC is undefined for an attribute that every test image has, or none has
    defined = {a: float(roc_auc_score(truth[:, j], sims[:, j])) for j, a in enumerate(names)
               if 0 < truth[:, j].sum() < len(truth)}
    if not defined:
        return {"mean": None, "worst": None, "worst_attribute": None, "undefined": sorted(names),
                "per_attribute": {}}
    worst = min(defined, key=defined.get)
    return {"mean": float(np.mean(list(defined.values()))), "worst": defined[worst], "worst_attribute": worst,
            "undefined": sorted(set(names) - set(defined)), "per_attribute": defined}


def evaluate(model, tokenizer, images, labels, info: dict, seen: list, unseen: list, mean, std) -> dict:
    names, attrs = info["names"], class_attribute_dicts(info)
    feats = encode_images(model, images, mean, std)
    everyone = list(range(len(names)))
    res = {"zero_shot": {}, "chance": {"seen_among_seen": 1 / max(1, len(seen)),
                                       "unseen_among_unseen": 1 / max(1, len(unseen)),
                                       "among_all": 1 / len(names)}}
    prompts = {"name": [class_prompt(n) for n in names],
               "described": [described_class_prompt(n, a) for n, a in zip(names, attrs)]}
    for kind, texts in prompts.items():
        pf = encode_texts(model, tokenizer, texts)
        res["zero_shot"][kind] = {
            "seen_among_seen": zero_shot(feats, labels, pf, seen, seen),
            "unseen_among_unseen": zero_shot(feats, labels, pf, unseen, unseen) if unseen else None,
            "seen_among_all": zero_shot(feats, labels, pf, everyone, seen),
            "unseen_among_all": zero_shot(feats, labels, pf, everyone, unseen) if unseen else None,
        }
    res["prompt_examples"] = {"name": prompts["name"][0], "described": prompts["described"][0]}
    group_of = {a: g for g, members in info["attribute_groups"].items() for a in members}
    attr_prompts = [attribute_prompt(a, group_of.get(a, "")) for a in info["attributes"]]
    af = encode_texts(model, tokenizer, attr_prompts)
    matrix = np.asarray(info["class_attributes"], dtype=np.int64)
    res["attribute_prompt_example"] = attr_prompts[0]
    res["attribute_auc"] = {"all_test": attribute_aucs(feats, labels, af, matrix, info["attributes"])}
    if unseen:
        mask = torch.isin(labels, torch.tensor(unseen))
        res["attribute_auc"]["unseen_test"] = attribute_aucs(feats[mask], labels[mask], af, matrix,
                                                             info["attributes"])
    return res


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def markdown(report: dict) -> str:
    zs, ch = report["zero_shot"], report["chance"]
    lines = [(f"Synthetic CLIP `{report['model_name']}` trained on {report['trained_on']} "
              f"({report['train_images']} images, {report['steps']} steps"
              f"{' from ' + report['init'] if report.get('init') else ''}, {report['fit_seconds']:.0f} s "
              f"fitting on {report['threads']} thread(s)); test split, top-1 %:"), "",
             "| prompts | seen among seen | unseen among unseen | seen among all | unseen among all |",
             "|---|---|---|---|---|"]
    for kind, r in zs.items():
        lines.append(f"| {kind} | {pct(r['seen_among_seen'])} | {pct(r['unseen_among_unseen'])} | "
                     f"{pct(r['seen_among_all'])} | {pct(r['unseen_among_all'])} |")
    lines.append(f"| chance | {pct(ch['seen_among_seen'])} | {pct(ch['unseen_among_unseen'])} | "
                 f"{pct(ch['among_all'])} | {pct(ch['among_all'])} |")
    examples = report["prompt_examples"]
    lines += ["", (f"Prompts: `{examples['name']}`, `{examples['described']}`; "
                   f"attributes: `{report['attribute_prompt_example']}`."), "",
              "| attribute ROC AUC | mean | worst (attribute) |", "|---|---|---|"]
    for part, r in report["attribute_auc"].items():
        worst = "-" if r["worst"] is None else f"{r['worst']:.3f} ({r['worst_attribute']})"
        mean = "-" if r["mean"] is None else f"{r['mean']:.3f}"
        lines.append(f"| {part.replace('_', ' ')} images | {mean} | {worst} |")
    return "\n".join(lines) + "\n"


def report_paths(out: str) -> tuple:
    stem = os.path.splitext(out)[0]
    return stem + "_report.json", stem + "_report.md"


# ---------------------------------------------------------------------------------------------- main

@cli
def main(args):
    info = read_classes(args.data_root)
    for key in ("attributes", "attribute_groups", "class_attributes", "zsl_splits"):
        if key not in info:
            raise UserError(f"{args.data_root}/classes.json has no '{key}'; this script needs the embedded "
                            f"data set (data/synthetic/prepare.py)")
    train_ids, seen, unseen = training_classes(info, args.exclude_unseen, args.all_classes)
    size = args.image_size or int(info.get("image_size", 64))
    if size % args.patch_size:
        raise UserError(f"--image-size {size} is not a multiple of --patch-size {args.patch_size}")
    torch.manual_seed(args.seed)
    if args.init:
        state, _, cfg = initial_weights(args.init)
    else:
        cfg = model_config(image_size=size, patch_size=args.patch_size, width=args.width, layers=args.layers,
                           embed_dim=args.embed_dim)
    model = build_model(cfg)
    if args.init:
        model.load_state_dict(state)
        size = cfg["vision_cfg"]["image_size"]
    mean, std = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)

    train_images, train_labels = load_images(args.data_root, "train", train_ids, size)
    test_images, test_labels = load_images(args.data_root, "test", list(range(len(info["names"]))), size)
    attrs = class_attribute_dicts(info)
    sampler = PairSampler(train_labels, info["names"], attrs, args.sampling, args.p_name, args.seed)
    trained_on = "all classes" if args.all_classes else f"the seen classes of split {args.exclude_unseen}"
    print(f"training on {trained_on}: {len(train_images)} images of "
          f"{', '.join(info['names'][c] for c in train_ids)}")

    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    loss_fn = open_clip.ClipLoss()
    gen = torch.Generator().manual_seed(args.seed)
    start, losses = time.time(), []
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps, args.warmup, args.lr)
        idx, captions = sampler.batch(args.batch_size)
        images = to_input(augment(train_images[idx], gen), mean, std)
        losses.append(train_step(model, loss_fn, optimizer, images, tokenizer(captions)))
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps}  loss {np.mean(losses[-args.log_every:]):.3f}  "
                  f"{time.time() - start:.0f} s")
    fit_seconds = time.time() - start

    report = {"model_name": MODEL_NAME, "trained_on": trained_on, "split": args.exclude_unseen,
              "train_classes": [info["names"][c] for c in train_ids],
              "seen": [info["names"][c] for c in seen], "unseen": [info["names"][c] for c in unseen],
              "train_images": len(train_images), "test_images": len(test_images), "steps": args.steps,
              "batch_size": args.batch_size, "init": args.init, "fit_seconds": fit_seconds,
              "threads": torch.get_num_threads(), "first_loss": losses[0],
              "last_loss": float(np.mean(losses[-10:])),
              **evaluate(model, tokenizer, test_images, test_labels, info, seen, unseen, mean, std)}
    atomic_save(checkpoint_dict(model, MODEL_NAME, cfg, class_names=info["names"], train_classes=train_ids,
                                report=report), args.out)
    json_path, md_path = report_paths(args.out)
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    with open(md_path, "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {args.out}, {json_path}, {md_path}")


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "train_clip"))
