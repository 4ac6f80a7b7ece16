"""Evaluate KMDN head/tail models on the test images of their own classes.

    python KMDN/test.py --weights runs/kmdn/dior/distill/head_model.pt runs/kmdn/dior/distill/tail_model.pt \
        --data-root data/dior/processed

For each file: per-class and mean accuracy, OA and macro-F1 on its part's test subset, saved
(results.md/.json, confusion matrix) in test_<file name>/ next to the weights unless --output-dir; a file
whose report there is finished (results.json, written last) is not evaluated again. Also checks that the
file's classes are split.json's classes of its part, and that the head and tail class sets are disjoint.
"""
import argparse
import os

from common import finished
from common.config import add_config_arg, parse_args
from common.distributed import setup
from common.engine import evaluate
from common.errors import UserError, cli
from common.jsonfile import read_json
from common.loaders import make_loader
from common.options import add_device_arg, add_loader_args, add_output_arg
from common.part_model import check_part, load_part_model
from common.report import write_report
from common.split import load_data_split
from KMDN.model import part_dataset


def get_args_parser():
    p = argparse.ArgumentParser("KMDN head/tail model evaluation")
    add_config_arg(p)
    p.add_argument("--weights", nargs="+", required=True,
                   help="one or more part-model files (model_final.pt, head_model.pt, tail_model.pt, or the "
                        "original UModel_epoch_<e>.pth / RModel_epoch_<e>.pth)")
    p.add_argument("--part", default=None, choices=["head", "tail"],
                   help="the part of an original bare state dict whose class count fits both parts of "
                        "split.json")
    p.add_argument("--data-root", default=None)
    p.add_argument("--split", default=None, help="split.json (default: <root>/split.json)")
    p.add_argument("--batch-size", type=int, default=64)
    add_loader_args(p, eval_batch_size=False)
    add_output_arg(p, help="report folder; with several files one sub-folder per file (default: next to each "
                           "file)")
    p.add_argument("--overwrite", action="store_true", help="evaluate again a file whose report is finished")
    add_device_arg(p)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    return p


@cli
def main(args):
    split = load_data_split(args)  # also checks that split.json's head and tail are disjoint
    loaded = []
    for path in args.weights:
        model, meta = load_part_model(path, split=split, part=args.part)
        check_part(meta, path, meta["part"], split, "--weights")
        loaded.append((path, model, meta))
    parts = {}
    for path, _, meta in loaded:
        parts.setdefault(meta["part"], set()).update(meta["classes"])
    if len(parts) == 2 and parts["head"] & parts["tail"]:
        raise UserError(f"the head and tail models share classes {sorted(parts['head'] & parts['tail'])}")
    rt = setup(args.device)
    lines = []
    for path, model, meta in loaded:
        stem = os.path.splitext(os.path.basename(path))[0]
        if args.output_dir:
            out = os.path.join(args.output_dir, stem) if len(loaded) > 1 else args.output_dir
        else:
            out = os.path.join(os.path.dirname(os.path.abspath(path)), f"test_{stem}")
        settings = {**finished.settings_of(args, ignore=("weights",)), "weights": os.path.abspath(path),
                    "input_files": finished.file_stamps(path)}
        if finished.already_finished(os.path.join(out, "results.json"), settings, args.overwrite):
            res = read_json(os.path.join(out, "results.json"), "report")
        else:
            model.to(rt.device)
            test_set = part_dataset(args.data_root, split, meta["part"], "test", meta["img_size"],
                                    meta["norm"], on_corrupt=args.on_corrupt)
            cm = evaluate(model, make_loader(test_set, args.batch_size, False, rt, args.workers), rt,
                          meta["num_classes"], amp=args.amp)
            res = write_report(cm, meta["names"], out, None,
                               [split["train_counts"][c] for c in meta["classes"]],
                               title=f"KMDN {meta['part']} model ({os.path.basename(path)}) on "
                                     f"{split['dataset']} {meta['part']} test images", settings=settings)
        lines.append(f"{path}: {meta['part']} model, {meta['num_classes']} classes, mean class accuracy "
                     f"{100 * res['mean_acc']:.2f}%, OA {100 * res['oa']:.2f}%; report {out}")
    if len(parts) == 2:
        lines.append(f"head classes {sorted(parts['head'])} and tail classes {sorted(parts['tail'])} are "
                     "disjoint")
    print("\n".join(lines))


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "kmdn_test"))
