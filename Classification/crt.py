"""cRT (Kang et al. 2020): re-train only the linear classifier of a trained classifier, with class-balanced sampling.

    python Classification/crt.py --config configs/synthetic.yaml --weights runs/classification/x/model_final.pt

The backbone is frozen (no gradient, batch-norm statistics kept: eval mode); the fc is re-initialised and trained
for --epochs (the paper: a few, 10 on ImageNet-LT) with the optimiser and schedule of Classification/train.py.
Writes a run folder like train.py's: model_final.pt (an ordinary classifier file), the report, metrics.jsonl.
"""
import argparse
import os

from torch import nn

from common import checkpoint, rundir
from common.backbones import build_classifier
from common.config import add_config_arg, parse_args
from common.datasets import ImageList
from common.distributed import cleanup, setup
from common.errors import UserError, cli
from common.layout import anno_path, read_classes
from common.loaders import make_loader
from common.options import eval_batch_size
from common.report import export_classifier, groups_from_split
from common.split import optional_split
from common.training import add_fit_args, add_image_args, fit
from common.transforms import classification
from Classification import longtail


def get_args_parser():
    p = argparse.ArgumentParser("cRT: classifier re-training on a frozen backbone")
    add_config_arg(p)
    p.add_argument("--weights", required=True, help="a trained classifier (Classification/train.py's model_final.pt)")
    g = p.add_argument_group("data")
    g.add_argument("--data-root", default=None, help="processed data root (classes.json, anno/, train/, test/)")
    g.add_argument("--train-list", action="append", default=None, help="default: <root>/anno/<NAME>_train.txt")
    g.add_argument("--test-list", default=None, help="default: <root>/anno/<NAME>_test.txt")
    g.add_argument("--split", default=None, help="split.json for head/tail accuracy (default: <root>/split.json)")
    add_image_args(g, img_size=None, norm=None)  # default: those stored with --weights
    g.add_argument("--sampler", default="class_balanced", choices=list(longtail.SAMPLERS))
    add_fit_args(p, epochs=10, lr_drop_epochs=[])
    rundir.add_run_args(p, "classification_crt")
    return p


class FrozenBackbone(nn.Module):
    """Wraps a classifier so that only `fc` trains: the rest has no gradient and stays in eval mode."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        model.requires_grad_(False)
        model.fc.requires_grad_(True)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.eval()
        self.model.fc.train(mode)
        return self

    def forward(self, x):
        return self.model(x)


def load_trained(path: str, num_classes: int, names: list) -> tuple:
    ck = checkpoint.load(path, "--weights file")
    arch = ck.get("arch") or (ck.get("args") or {}).get("model")
    if not arch:
        raise UserError(f"{path} does not name its architecture; pass Classification/train.py's model_final.pt")
    if ck.get("names") and ck["names"] != names:
        raise UserError(f"{path} was trained on classes {ck['names'][:3]}..., not those of this --data-root")
    model = build_classifier(arch, num_classes, "none", verbose=False)
    if not isinstance(getattr(model, "fc", None), nn.Linear):
        raise UserError(f"cRT re-trains the `fc` classifier; {arch} has none (use a ResNet)")
    try:
        model.load_state_dict(ck.get("model", ck))
    except RuntimeError:
        raise UserError(f"{path} does not fit a {arch} with {num_classes} classes") from None
    return model, arch, ck


@cli
def main(args):
    if not args.data_root:
        raise UserError("--data-root is required (or set data_root in the config's classification_crt section)")
    info = read_classes(args.data_root)
    names = info["names"]
    split = optional_split(args.split, args.data_root)
    model, arch, ck = load_trained(args.weights, len(names), names)
    args.img_size = args.img_size or ck.get("img_size") or 224
    args.norm = args.norm or ck.get("norm") or "half"
    root = args.data_root
    kw = dict(num_classes=len(names), on_corrupt=args.on_corrupt)
    train_set = ImageList(os.path.join(root, "train"), args.train_list or [anno_path(root, "train")],
                          classification(args.img_size, True, args.norm, args.hflip), **kw)
    test_set = ImageList(os.path.join(root, "test"), [args.test_list or anno_path(root, "test")],
                         classification(args.img_size, False, args.norm), **kw)

    rt = setup(args.device)
    out = rundir.prepare(args, rt.is_main)
    sampler = (longtail.ClassBalancedSampler(train_set.targets, args.seed, rt.rank, rt.world_size)
               if args.sampler == "class_balanced" else None)
    train_loader = make_loader(train_set, args.batch_size, True, rt, args.workers, args.seed, sampler=sampler)
    test_loader = make_loader(test_set, eval_batch_size(args), False, rt, args.workers)
    model.fc.reset_parameters()
    net = FrozenBackbone(model).to(rt.device)
    groups = groups_from_split(split, list(range(len(names))))
    cm = fit(net, train_loader, test_loader, args, rt, out, len(names), groups, extra_state={"names": names},
             desc="cRT epochs")
    if cm is None:  # --stop-after
        return
    if rt.is_main:
        export_classifier(model, cm, out, names, groups, split, f"cRT of {arch} on {info['dataset']}", arch=arch,
                          img_size=args.img_size, norm=args.norm, dataset=info["dataset"],
                          crt_of=os.path.abspath(args.weights))
    cleanup()


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "classification_crt"))
