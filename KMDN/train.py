"""KMDN stage 1: train the head model on head-class images only, or the tail model on tail-class images only.

    python KMDN/train.py --part head --config configs/dior.yaml --name dior     -> runs/kmdn/dior/head/
    python KMDN/train.py --part tail --config configs/dior.yaml --name dior     -> runs/kmdn/dior/tail/
    torchrun --nproc_per_node 4 KMDN/train.py ...                                 (DDP)

Labels are remapped through split.json's ordered class list of the part. Upstream recipe: ResNet-50
with ImageNet weights, Adam 1e-3, weight decay 1e-4, batch 32, 100 epochs for both parts (the released tail
script's 1 epoch is a debug value), lr x0.1 after epochs 31, 61, 91, 224 px, flip, [-1, 1] normalisation.
Every epoch: accuracy, macro-F1 and per-class accuracy on the part's test subset. Writes model_final.pt (the
part-model format of common/part_model.py, read by KMDN/distill.py), model_epoch_<e>.pt every --save-every
epochs, ckpt_last.pt for --resume, and the per-class report.
"""
import argparse
import os

import torch

from common import rundir
from common.backbones import build_feature_resnet, check_feature_resnet_name
from common.config import add_config_arg, parse_args
from common.distributed import cleanup, setup
from common.errors import cli
from common.loaders import make_loader
from common.options import eval_batch_size
from common.part_model import PARTS, part_meta, save_part_model
from common.report import write_report
from common.split import load_data_split
from common.training import add_fit_args, add_image_args, fit
from KMDN.model import part_dataset


def get_args_parser():
    p = argparse.ArgumentParser("KMDN stage 1: head or tail model")
    add_config_arg(p)
    p.add_argument("--part", required=True, choices=PARTS, help="train the head model or the tail model")
    g = p.add_argument_group("data")
    g.add_argument("--data-root", default=None,
                   help="processed data root (classes.json, anno/, train/, test/)")
    g.add_argument("--split", default=None, help="split.json from data/split.py (default: <root>/split.json)")
    add_image_args(g)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="resnet50", help="resnet18, resnet34, resnet50, resnet101 or resnet152")
    g.add_argument("--weights", default="imagenet",
                   help="'imagenet' (torchvision's IMAGENET1K_V1, as pretrained=True; every layer), a "
                        "torchvision enum name (IMAGENET1K_V2), 'none', or a local state-dict file")
    g.add_argument("--upstream-shortcut-init", action="store_true",
                   help="re-initialise the projection shortcuts after loading the weights, as upstream's "
                        "ResNet left them random")
    g = add_fit_args(p, epochs=100, lr_drop_epochs=[32, 62, 92])
    g.add_argument("--save-every", type=int, default=10,
                   help="write model_epoch_<e>.pt when e %% N == 0 (upstream: 10; its distillation started "
                        "from epoch 0's file); 0: never")
    rundir.add_run_args(p, "kmdn")
    for a in p._actions:
        if a.dest == "output_dir":
            a.help = "run folder (default: runs/kmdn/<name>/<part>)"
    return p


@cli
def main(args):
    split = load_data_split(args)
    part, classes = args.part, split[args.part]
    names = [split["names"][c] for c in classes]
    kw = {"img_size": args.img_size, "norm": args.norm, "on_corrupt": args.on_corrupt}
    train_set = part_dataset(args.data_root, split, part, "train", hflip=args.hflip, **kw)
    test_set = part_dataset(args.data_root, split, part, "test", **kw)
    args.output_dir = args.output_dir or os.path.join("runs", "kmdn", args.name, part)
    check_feature_resnet_name(args.model)
    rt = setup(args.device)
    out = rundir.prepare(args, rt.is_main)
    train_loader = make_loader(train_set, args.batch_size, True, rt, args.workers, args.seed)
    test_loader = make_loader(test_set, eval_batch_size(args), False, rt, args.workers)
    if rt.is_main:
        print(f"{part} model: {len(classes)} classes {classes}, {len(train_set)} train / {len(test_set)} "
              f"test images; run folder {out}")

    model = build_feature_resnet(args.model, len(classes), args.weights, args.upstream_shortcut_init,
                                 verbose=rt.is_main).to(rt.device)
    if args.channels_last and rt.cuda:
        model = model.to(memory_format=torch.channels_last)
    meta = part_meta(model, args.model, part, split, args.img_size, args.norm)

    def save_epoch_file(epoch):
        if args.save_every and epoch % args.save_every == 0:
            save_part_model(model, os.path.join(out, f"model_epoch_{epoch}.pt"), meta)

    cm = fit(model, train_loader, test_loader, args, rt, out, len(classes), extra_state={"meta": meta},
             on_epoch_end=save_epoch_file, desc=f"{part} epochs")
    if cm is None:  # --stop-after
        return
    if rt.is_main:
        save_part_model(model, os.path.join(out, "model_final.pt"), meta)
        write_report(cm, names, out, None, [split["train_counts"][c] for c in classes],
                     title=f"KMDN {part} model ({args.model}) on {split['dataset']} {part} test images")
        print(f"{part} model: {os.path.join(out, 'model_final.pt')}")
    cleanup()


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "kmdn_train"))
