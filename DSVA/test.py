"""Evaluate saved DSVA weights: ZSL accuracy and GZSL U, S, H of every branch, and the attention-map picture.

    python DSVA/test.py --weights runs/dsva/zsl_43/model_final.pt
    python DSVA/test.py --weights model_best.pt --data-root /data/RSSDIVCS --image-root /data/RSSDIVCS

The weights file carries the backbone's architecture, the class x attribute matrix, the classes and the
training run's data options: flags given here override them (e.g. --data-root on another machine, --gamma).
Writes results.md, attention_maps.png and, last, results.json to --output-dir (default: <weights
folder>/test/<weights name>/); run again, a finished report is left as it is.
"""
import argparse
import os

import numpy as np
import torch
from torch.utils.data import DataLoader

from common import checkpoint, finished
from common.config import add_config_arg, parse_args, positive_int
from common.datasets import ImageList
from common.distributed import setup
from common.errors import UserError, cli
from common.options import add_device_arg, add_loader_args, add_output_arg
from DSVA.episodes import dsva_transform
from DSVA.evaluate import BRANCHES, attention_png, evaluate, pct, pick_images
from DSVA.model import DSVA, build_visual
from DSVA.sources import add_data_args, load_zsl_data


def get_args_parser():
    p = argparse.ArgumentParser("DSVA evaluation of saved weights")
    add_config_arg(p)
    p.add_argument("--weights", required=True, help="model_final.pt / model_best.pt written by DSVA/train.py")
    data_group = add_data_args(p)
    # unset data options fall back to those stored with the weights, then to the training defaults
    p.set_defaults(**{a.dest: None for a in data_group._group_actions})
    p.add_argument("--gamma", type=float, default=None,
                   help="calibrated stacking (default: the training run's)")
    p.add_argument("--branch", default=None, choices=list(BRANCHES),
                   help="headline branch (default: training's)")
    add_loader_args(p, eval_batch_size=False)
    p.add_argument("--eval-batch-size", type=positive_int, default=None, help="default: the training run's")
    p.add_argument("--vis-images", type=int, default=4, help="unseen test images in attention_maps.png")
    add_output_arg(p, help="report folder; a finished report there (results.json) is kept unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="evaluate again when the report folder holds a "
                   "finished report")
    add_device_arg(p)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision on CUDA")
    return p


def data_defaults() -> dict:
    p = argparse.ArgumentParser(add_help=False)
    add_data_args(p)
    return vars(p.parse_args([]))


PATH_OPTIONS = ("split_file", "images_mat", "splits_mat", "image_root", "attribute_groups")


def data_options(args, stored: dict) -> argparse.Namespace:
    """Data options: this command line, else the training run's (stored with the weights), else the defaults.

    A --data-root given here that differs from the training run's moves the stored paths under the old root
    with it (the data set was moved or copied): <old root>/files/x.mat becomes <new root>/files/x.mat.
    """
    merged = {d: getattr(args, d) if getattr(args, d) is not None else stored.get(d, v)
              for d, v in data_defaults().items()}
    old_root = stored.get("data_root")
    if (args.data_root is not None and old_root
            and os.path.abspath(old_root) != os.path.abspath(args.data_root)):
        for d in PATH_OPTIONS:
            value = merged[d]
            if getattr(args, d) is not None or not value:
                continue
            rel = os.path.relpath(os.path.abspath(value), os.path.abspath(old_root))
            if rel == "." or not rel.startswith(".."):
                merged[d] = os.path.normpath(os.path.join(args.data_root, rel))
                print(f"note: --{d.replace('_', '-')} {value} (the training run's, under its data root "
                      f"{old_root}) is taken as {merged[d]}")
    return argparse.Namespace(**merged, seed=stored.get("seed", 0))


@cli
def main(args):
    ck = checkpoint.load(args.weights, "weights file")
    if not isinstance(ck, dict) or "model" not in ck or "class_attributes" not in ck:
        raise UserError(f"{args.weights} is not a DSVA weights file (model_final.pt or model_best.pt of "
                        f"DSVA/train.py)")
    stored = ck.get("args") or {}
    data_args = data_options(args, stored)
    user_attributes = args.attributes is not None
    if not user_attributes:
        data_args.attributes = None  # the matrix stored with the weights is the one trained with
    data = load_zsl_data(data_args, require_attributes=user_attributes)
    if data.names != ck["names"]:
        raise UserError(f"{args.weights} was trained on classes {ck['names'][:3]}..., not those of "
                        f"{data_args.data_root}")
    att = torch.tensor(np.asarray(data.attributes if user_attributes else ck["class_attributes"]),
                       dtype=torch.float32)
    groups = data.attribute_groups if user_attributes else ck.get("attribute_groups")
    attr_names = data.attribute_names if user_attributes else ck.get("attribute_names")

    out = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(args.weights)), "test",
                                          os.path.splitext(os.path.basename(args.weights))[0])
    settings = finished.settings_of(args)
    if finished.already_finished(os.path.join(out, "results.json"), settings, args.overwrite):
        return
    rt = setup(args.device)
    visual = build_visual(ck["clip_model"], ck.get("clip_cfg"), bool(ck.get("quick_gelu")))
    model = DSVA(visual, att.shape[1], groups, bool(ck.get("ln_post")), stored.get("proposal_threshold", 1.0),
                 stored.get("proposal_weight", 1.0))
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise UserError(f"{args.weights} does not fit a DSVA model of {ck['clip_model']} with {att.shape[1]} "
                        f"attributes ({str(e).splitlines()[0]})") from None
    model.to(rt.device)
    size, mean, std = ck["image_size"], tuple(ck["mean"]), tuple(ck["std"])
    gamma = args.gamma if args.gamma is not None else ck.get("gamma", 1e-4)
    branch = args.branch or ck.get("branch", "local")
    batch = args.eval_batch_size or stored.get("eval_batch_size", 64)
    tf = dsva_transform(size, False, mean, std)
    loaders = [DataLoader(ImageList(items=items, transform=tf, on_corrupt=args.on_corrupt, check_files=False),
                          batch_size=batch, shuffle=False, num_workers=args.workers,
                          pin_memory=rt.cuda) for items in (data.test_seen, data.test_unseen)]
    figures = evaluate(model, *loaders, att.T.contiguous().to(rt.device), data.seen, data.unseen, gamma, rt,
                       args.amp, bool(ck.get("proposal")))

    os.makedirs(out, exist_ok=True)
    res = {"weights": os.path.abspath(args.weights), "epoch": ck.get("epoch"), "dataset": data.dataset,
           "branch": branch, "gamma": gamma, "figures": figures, **figures[branch], "settings": settings}
    lines = [(f"## DSVA {os.path.basename(args.weights)} (epoch {ck.get('epoch')}) on {data.dataset}, "
              f"{len(data.seen)} seen / {len(data.unseen)} unseen classes, gamma {gamma:g}"), "",
             "| branch | ZSL acc | GZSL U | GZSL S | GZSL H |", "|---|---|---|---|---|"]
    for b, f in figures.items():
        lines.append(f"| {b}{' (headline)' if b == branch else ''} | {pct(f['zsl'])} | {pct(f['u'])} | "
                     f"{pct(f['s'])} | {pct(f['h'])} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    attention_png(model, loaders[1].dataset, pick_images(data.test_unseen, data.unseen, args.vis_images),
                  att.T.contiguous().to(rt.device), data.names, attr_names, mean, std,
                  os.path.join(out, "attention_maps.png"), rt, data.unseen)
    finished.write_json_last(os.path.join(out, "results.json"), res)  # last: the report is finished
    print(text)
    print(f"report: {out}")


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "dsva_test"))
