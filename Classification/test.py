"""Evaluate released or trained classifier weights on a test list.

    python Classification/test.py --weights runs/classification/dior/model_final.pt \
        --data-root data/dior/processed

Prints and saves (next to the weights, in test/<data set>/ unless --output-dir) OA, macro-F1, per-class
accuracy and F1, head/tail mean accuracy from split.json, and a confusion matrix PNG.
"""
import argparse
import copy
import os

from Classification import longtail
from common import finished
from common.backbones import build_classifier, load_classifier
from common.config import add_config_arg, parse_args
from common.datasets import ImageList
from common.distributed import setup
from common.engine import evaluate
from common.errors import UserError, cli
from common.jsonfile import write_json
from common.layout import anno_path, read_classes
from common.loaders import make_loader
from common.metrics import summarize
from common.options import add_device_arg, add_loader_args, add_output_arg
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
    p.add_argument("--split", default=None, help="split.json for head/tail accuracy (default: "
                                                 "<root>/split.json)")
    p.add_argument("--model", default=None,
                   help="architecture, if the weights file does not name it (a bare state dict: inferred "
                        "from its keys, else resnet50)")
    p.add_argument("--img-size", type=int, default=None,
                   help="default: the size stored with the weights, else 224")
    p.add_argument("--norm", default=None, choices=list(NORMALISATIONS),
                   help="default: stored with the weights")
    p.add_argument("--batch-size", type=int, default=64)
    add_loader_args(p, eval_batch_size=False)
    add_output_arg(p, help="report folder (default: <weights folder>/test/<data set>/); a "
                   "finished report there is kept unless --overwrite (an unfinished one is redone)")
    p.add_argument("--overwrite", action="store_true", help="replace the previous report in the report "
                                                            "folder")
    add_device_arg(p)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    g = p.add_argument_group("post-hoc long-tail adjustments (no retraining)")
    g.add_argument("--logit-adjust", type=float, default=None, metavar="TAU",
                   help="predict argmax logits - TAU * log(train prior) (Menon et al. 2021; their post-hoc "
                        "default TAU = 1); the prior is split.json's train counts")
    g.add_argument("--tau-norm", type=float, default=None, metavar="TAU",
                   help="divide each class weight vector of the fc by its norm^TAU, TAU in [0, 2], bias "
                        "dropped (Kang et al. 2020, whose code sweeps TAU in [0, 2] on a validation set)")
    g.add_argument("--tau-norm-keep-bias", action="store_true", help="keep the fc bias under --tau-norm")
    g.add_argument("--tune-list", default=None,
                   help="a held-out annotation list (paths relative to <root>/train): the TAU of the one "
                        "post-hoc flag given is then chosen from --tau-grid by mean per-class accuracy on it")
    g.add_argument("--tau-grid", type=float, nargs="+", default=[0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2],
                   help="--tune-list candidates")
    return p


def post_hoc(model, args, split):
    """The model with --tau-norm and --logit-adjust applied, and a suffix naming them for the report
    folder."""
    suffix = ""
    if args.tau_norm is not None:
        fc = getattr(model, "fc", None)
        if fc is None:
            raise UserError("--tau-norm needs a model with an `fc` classifier (a ResNet)")
        longtail.tau_normalize_(fc, args.tau_norm, args.tau_norm_keep_bias)
        suffix += f"_taunorm{args.tau_norm:g}"
    if args.logit_adjust is not None:
        if not split:
            raise UserError("--logit-adjust needs the train class counts: pass --split or run data/split.py")
        model = longtail.LogitAdjusted(model, split["train_counts"], args.logit_adjust)
        suffix += f"_la{args.logit_adjust:g}"
    return model, suffix


def tune_post_hoc(args, state, arch, names, split, rt, transform) -> dict:
    """Set args.logit_adjust or args.tau_norm to the --tau-grid value best on --tune-list; returns what was
    chosen and each candidate's score."""
    which = [f for f in ("logit_adjust", "tau_norm") if getattr(args, f) is not None]
    if len(which) != 1:
        raise UserError("--tune-list tunes one post-hoc flag: give exactly one of --logit-adjust, --tau-norm")
    held_out = ImageList(os.path.join(args.data_root, "train"), [args.tune_list], transform,
                         num_classes=len(names), on_corrupt=args.on_corrupt)
    loader = make_loader(held_out, args.batch_size, False, rt, args.workers)
    lo, hi = longtail.TAU_NORM_RANGE
    grid = [t for t in args.tau_grid if which[0] == "logit_adjust" or lo <= t <= hi]
    scores = {}
    for tau in grid:
        setattr(args, which[0], tau)
        model = build_classifier(arch, len(names), "none", verbose=False)
        model.load_state_dict(state)
        model = post_hoc(model, args, split)[0].to(rt.device)
        scores[tau] = summarize(evaluate(model, loader, rt, len(names), amp=args.amp))["mean_acc"]
    best = max(scores, key=scores.get)  # the first of equal scores
    setattr(args, which[0], best)
    print(f"--{which[0].replace('_', '-')} tuned on {args.tune_list}: tau {best:g} (mean per-class accuracy "
          + ", ".join(f"{t:g}: {100 * v:.1f}" for t, v in scores.items()) + ")")
    return {which[0]: best, "tune_list": args.tune_list, "tune_mean_acc": {f"{t:g}": round(v, 6)
                                                                            for t, v in scores.items()}}


@cli
def main(args):
    if not args.data_root:
        raise UserError("--data-root is required")
    info = read_classes(args.data_root)
    names = info["names"]
    model, ck = load_classifier(args.weights, len(names), args.model)
    arch = ck["arch"]
    if ck.get("names") and ck["names"] != names:
        raise UserError(f"{args.weights} was trained on classes {ck['names'][:3]}..., not those of "
                        f"{args.data_root}")
    saved_args = ck.get("args") or {}
    img_size = args.img_size or ck.get("img_size") or saved_args.get("img_size") or 224
    norm = args.norm or ck.get("norm") or saved_args.get("norm") or "half"

    split = optional_split(args.split, args.data_root)
    rt = setup(args.device)
    tuned = None
    if args.tune_list:
        tuned = tune_post_hoc(args, copy.deepcopy(model.state_dict()), arch, names, split, rt,
                              classification(img_size, False, norm))
    model, suffix = post_hoc(model, args, split)
    out = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(args.weights)), "test",
                                          info["dataset"] + suffix)
    settings = finished.settings_of(args)
    if finished.already_finished(os.path.join(out, "results.json"), settings, args.overwrite):
        return
    model.to(rt.device)
    test_set = ImageList(os.path.join(args.data_root, "test"),
                         [args.test_list or anno_path(args.data_root, "test")],
                         classification(img_size, False, norm), num_classes=len(names),
                         on_corrupt=args.on_corrupt)
    cm = evaluate(model, make_loader(test_set, args.batch_size, False, rt, args.workers), rt, len(names),
                  amp=args.amp)
    if tuned:  # before the report, which marks the folder finished
        os.makedirs(out, exist_ok=True)
        write_json(os.path.join(out, "tuned.json"), tuned)
    write_report(cm, names, out, groups_from_split(split, list(range(len(names)))),
                 split["train_counts"] if split else None, split["tail"] if split else (),
                 title=f"{arch} ({os.path.basename(args.weights)}) on {info['dataset']} test",
                 settings=settings)
    print(f"report: {out}")


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "classification_test"))
