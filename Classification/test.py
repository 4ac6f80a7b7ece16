"""Evaluate released or trained classifier weights on a test list.

    python Classification/test.py --weights runs/classification/dior/model_final.pt --data-root data/dior/processed

Prints and saves (next to the weights, in test/<data set>/ unless --out) OA, macro-F1, per-class accuracy and F1,
head/tail mean accuracy from split.json, and a confusion matrix PNG.
"""
import argparse
import os

from common.backbones import load_classifier
from common.config import add_config_arg, parse_args
from common.datasets import ImageList
from common.distributed import setup
from common.engine import evaluate
from common.errors import UserError, cli
from common.layout import anno_path, read_classes
from common.loaders import make_loader
from common.report import groups_from_split, write_report
from common.split import optional_split
from common.transforms import NORMALISATIONS, classification


def get_args_parser():
    p = argparse.ArgumentParser("TGN classifier evaluation")
    add_config_arg(p)
    p.add_argument("--weights", required=True,
                   help="model_final.pt (weights-only export), a ckpt_*.pt, or the original result.pth "
                        "(recognised by its layout and renamed on load)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--test-list", default=None, help="default: <root>/anno/<NAME>_test.txt")
    p.add_argument("--split", default=None, help="split.json for head/tail accuracy (default: <root>/split.json)")
    p.add_argument("--model", default=None,
                   help="architecture, if the weights file does not name it (a bare state dict: inferred from its "
                        "keys, else resnet50)")
    p.add_argument("--img-size", type=int, default=None, help="default: the size stored with the weights, else 224")
    p.add_argument("--norm", default=None, choices=list(NORMALISATIONS), help="default: stored with the weights")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--on-corrupt", default="skip", choices=["skip", "error"])
    p.add_argument("--out", default=None, help="report folder (default: <weights folder>/test/<data set>/); a "
                   "previous report there is kept unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace the previous report in the report folder")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    return p


@cli
def main(args):
    if not args.data_root:
        raise UserError("--data-root is required")
    info = read_classes(args.data_root)
    names = info["names"]
    model, ck = load_classifier(args.weights, len(names), args.model)
    arch = ck["arch"]
    if ck.get("names") and ck["names"] != names:
        raise UserError(f"{args.weights} was trained on classes {ck['names'][:3]}..., not those of {args.data_root}")
    saved_args = ck.get("args") or {}
    img_size = args.img_size or ck.get("img_size") or saved_args.get("img_size") or 224
    norm = args.norm or ck.get("norm") or saved_args.get("norm") or "half"

    split = optional_split(args.split, args.data_root)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.weights)), "test", info["dataset"])
    if os.path.isfile(os.path.join(out, "results.json")) and not args.overwrite:
        raise UserError(f"{out} already holds a report; pass --overwrite to replace it or --out to write "
                        f"another folder")
    rt = setup(args.device)
    model.to(rt.device)
    test_set = ImageList(os.path.join(args.data_root, "test"), [args.test_list or anno_path(args.data_root, "test")],
                         classification(img_size, False, norm), num_classes=len(names), on_corrupt=args.on_corrupt)
    cm = evaluate(model, make_loader(test_set, args.batch_size, False, rt, args.workers), rt, len(names),
                  amp=args.amp)
    write_report(cm, names, out, groups_from_split(split, list(range(len(names)))),
                 split["train_counts"] if split else None, split["tail"] if split else (),
                 title=f"{arch} ({os.path.basename(args.weights)}) on {info['dataset']} test")
    print(f"report: {out}")


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "classification_test"))
