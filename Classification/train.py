"""Train the TGN classifier (ResNet-50 by default) on the original or the CDTG-expanded training set.

    python Classification/train.py --config configs/dior.yaml --data-root data/dior/processed
    torchrun --nproc_per_node 4 Classification/train.py ...        (DDP)

Upstream recipe: Adam 1e-3, weight decay 1e-4, batch 32, 50 epochs, lr x0.1 from epoch 32,
224 px, horizontal flip, [-1, 1] normalisation.
"""
import argparse
import os

import torch

from Classification import longtail
from common import rundir
from common.backbones import build_classifier, check_model_name
from common.config import add_config_arg, parse_args
from common.datasets import ImageList
from common.distributed import cleanup, setup
from common.errors import UserError, cli
from common.layout import anno_path, read_classes
from common.loaders import make_loader
from common.options import eval_batch_size
from common.report import export_classifier, groups_from_split
from common.samplers import ClassBalancedSampler
from common.split import optional_split
from common.training import add_fit_args, add_image_args, fit
from common.transforms import classification


def get_args_parser():
    p = argparse.ArgumentParser("TGN classifier training")
    add_config_arg(p)
    g = p.add_argument_group("data")
    g.add_argument("--data-root", default=None,
                   help="processed data root (classes.json, anno/, train/, test/)")
    g.add_argument("--train-list", action="append", default=None,
                   help="annotation list; give it several times to add e.g. CDTG's expanded list "
                        "(default: <root>/anno/<NAME>_train.txt)")
    g.add_argument("--test-list", default=None, help="default: <root>/anno/<NAME>_test.txt")
    g.add_argument("--split", default=None,
                   help="split.json for head/tail accuracy (default: <root>/split.json)")
    add_image_args(g)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="resnet50", help="any torchvision classification model name")
    g.add_argument("--weights", default="imagenet",
                   help="'imagenet' (torchvision's IMAGENET1K_V1, as pretrained=True), a torchvision enum "
                        "name (IMAGENET1K_V2), 'none', or a local state-dict file (the original result.pth "
                        "is recognised by its layout and renamed)")
    g = p.add_argument_group("long-tail baselines (default: upstream's plain cross-entropy, instance "
                             "sampling)")
    g.add_argument("--loss", default="ce", choices=list(longtail.LOSSES),
                   help="ce; cb = class-balanced CE (Cui et al. 2019); balanced_softmax (Ren et al. 2020); "
                        "ldam = LDAM on a cosine classifier (Cao et al. 2019; with DRW by default)")
    g.add_argument("--sampler", default="instance", choices=list(longtail.SAMPLERS),
                   help="class_balanced: a class uniformly, then one of its images (DDP-aware)")
    g.add_argument("--cb-beta", type=float, default=0.9999,
                   help="effective-number beta of --loss cb and of DRW")
    g.add_argument("--drw-epoch", type=int, default=None,
                   help="from this epoch the loss is re-weighted by the class-balanced weights (deferred "
                        "re-weighting) with --loss ce, ldam or balanced_softmax; default: 80%% of --epochs "
                        "for ldam (the paper's 160/200), never otherwise; -1: never")
    g.add_argument("--drw-normalise", default="weighted_mean", choices=list(longtail.DRW_NORMALISATIONS),
                   help="re-weighted loss divided by the sum of the batch's weights (the LDAM-DRW "
                        "reference's cross-entropy with class weights) or by the batch size (this repository "
                        "before 2026-12-04)")
    g.add_argument("--ldam-max-margin", type=float, default=0.5, help="margin of the rarest class")
    g.add_argument("--ldam-scale", type=float, default=30.0, help="scale s of LDAM's cosine logits")
    add_fit_args(p, epochs=50, lr_drop_epochs=[32])
    rundir.add_run_args(p, "classification")
    return p


def build_data(args, num_classes: int):
    root = args.data_root
    train_lists = args.train_list or [anno_path(root, "train")]
    test_list = args.test_list or anno_path(root, "test")
    common = {"num_classes": num_classes, "on_corrupt": args.on_corrupt}
    train = ImageList(os.path.join(root, "train"), train_lists,
                      classification(args.img_size, True, args.norm, args.hflip), **common)
    test = ImageList(os.path.join(root, "test"), [test_list], classification(args.img_size, False, args.norm),
                     **common)
    return train, test


@cli
def main(args):
    if not args.data_root:
        raise UserError("--data-root is required (or set data_root in the config's classification section)")
    info = read_classes(args.data_root)
    names = info["names"]
    split = optional_split(args.split, args.data_root)

    # before the run folder: bad lists leave nothing behind
    train_set, test_set = build_data(args, len(names))
    check_model_name(args.model)
    longtail.check_train_args(args)
    rt = setup(args.device)
    out = rundir.prepare(args, rt.is_main)
    counts = longtail.class_counts_of(train_set.targets, len(names))
    sampler = (ClassBalancedSampler(train_set.targets, args.seed, rt.rank, rt.world_size)
               if args.sampler == "class_balanced" else None)
    train_loader = make_loader(train_set, args.batch_size, True, rt, args.workers, args.seed, sampler=sampler)
    test_loader = make_loader(test_set, eval_batch_size(args), False, rt, args.workers)
    if rt.is_main:
        print(f"{len(train_set)} train / {len(test_set)} test images, {len(names)} classes; run folder {out}")

    model = build_classifier(args.model, len(names), args.weights, verbose=rt.is_main)
    if args.loss == "ldam":
        model = longtail.use_cosine_classifier(model)
    model = model.to(rt.device)
    drw = longtail.default_drw_epoch(args.loss, args.epochs, args.drw_epoch)
    loss_for_epoch = None if args.loss == "ce" and drw is None else (
        lambda epoch: longtail.EpochLoss(args.loss, counts, epoch, args.cb_beta, drw, args.ldam_max_margin,
                                         args.ldam_scale, args.drw_normalise))
    if args.channels_last and rt.cuda:
        model = model.to(memory_format=torch.channels_last)
    groups = groups_from_split(split, list(range(len(names))))
    cm = fit(model, train_loader, test_loader, args, rt, out, len(names), groups,
             extra_state={"names": names}, loss_for_epoch=loss_for_epoch)
    if cm is None:  # --stop-after
        return
    if rt.is_main:
        # LDAM's cosine fc -> an ordinary fc with the same predictions
        longtail.plain_linear_equivalent(model)
        export_classifier(model, cm, out, names, groups, split, f"{args.model} on {info['dataset']}",
                          arch=args.model, img_size=args.img_size, norm=args.norm, dataset=info["dataset"])
    cleanup()


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "classification"))
