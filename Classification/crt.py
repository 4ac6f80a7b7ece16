"""cRT (Kang et al. 2020): re-train only the linear classifier of a trained classifier, with class-balanced
sampling.

    python Classification/crt.py --config configs/synthetic.yaml \
        --weights runs/classification/x/model_final.pt

The backbone gets no gradient; the fc is re-initialised and trained with the reference's recipe by default:
SGD (momentum 0.9, weight decay 5e-4), cosine decay over 10 epochs, lr 0.2 at batch 512 scaled linearly to the
batch (0.0125 at 32), and the backbone's batch-norm layers in train mode, as the reference's model.train()
leaves them (batch statistics, running statistics updated). --bn frozen keeps them in eval mode; --optimizer
adam --schedule step is this repository's earlier recipe. --tune-list LIST (a held-out list, paths relative to
<root>/train) keeps the model of the epoch with the best mean per-class accuracy on it, so the epochs are
chosen on it. Writes a run folder like train.py's: model_final.pt (an ordinary classifier file), the report,
metrics.jsonl.
"""
import argparse
import copy
import os

import torch
from torch import nn

from Classification import longtail
from common import checkpoint, rundir
from common.backbones import build_classifier
from common.config import add_config_arg, parse_args
from common.datasets import ImageList
from common.distributed import cleanup, setup
from common.engine import evaluate
from common.errors import UserError, cli
from common.jsonfile import write_json
from common.layout import anno_path, read_classes
from common.loaders import make_loader
from common.metrics import summarize
from common.options import eval_batch_size
from common.report import export_classifier, groups_from_split
from common.samplers import ClassBalancedSampler
from common.split import optional_split
from common.training import add_fit_args, add_image_args, fit
from common.transforms import classification


def get_args_parser():
    p = argparse.ArgumentParser("cRT: classifier re-training on a frozen backbone")
    add_config_arg(p)
    p.add_argument("--weights", required=True, help="a trained classifier (Classification/train.py's "
                                                    "model_final.pt)")
    g = p.add_argument_group("data")
    g.add_argument("--data-root", default=None, help="processed data root (classes.json, anno/, train/, "
                                                     "test/)")
    g.add_argument("--train-list", action="append", default=None,
                   help="default: <root>/anno/<NAME>_train.txt")
    g.add_argument("--test-list", default=None, help="default: <root>/anno/<NAME>_test.txt")
    g.add_argument("--split", default=None, help="split.json for head/tail accuracy (default: "
                                                 "<root>/split.json)")
    add_image_args(g, img_size=None, norm=None)  # default: those stored with --weights
    g.add_argument("--sampler", default="class_balanced", choices=list(longtail.SAMPLERS))
    g.add_argument("--tune-list", default=None,
                   help="held-out list (relative to <root>/train): the epoch best on it by mean per-class "
                        "accuracy gives the final model")
    g.add_argument("--bn", default="train", choices=["train", "frozen"],
                   help="the backbone's batch norm while the fc trains: train (the reference's "
                        "model.train(): batch statistics, running statistics updated) or frozen (eval mode)")
    add_fit_args(p, epochs=10, lr_drop_epochs=[], optimizer="sgd", lr=0.2 * 32 / 512, weight_decay=5e-4,
                 schedule="cosine")
    rundir.add_run_args(p, "classification_crt")
    return p


class FrozenBackbone(nn.Module):
    """Wraps a classifier so that only `fc` gets gradients; with bn="frozen" the rest stays in eval mode, with
    "train" it follows train()/eval() as the reference's model.train() does (batch-norm statistics update)."""

    def __init__(self, model: nn.Module, bn: str = "frozen"):
        super().__init__()
        self.model, self.bn = model, bn
        model.requires_grad_(False)
        model.fc.requires_grad_(True)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.bn == "frozen":
            self.model.eval()
            self.model.fc.train(mode)
        return self

    def forward(self, x):
        return self.model(x)


def load_trained(path: str, num_classes: int, names: list) -> tuple:
    ck = checkpoint.load(path, "--weights file")
    arch = ck.get("arch") or (ck.get("args") or {}).get("model")
    if not arch:
        raise UserError(f"{path} does not name its architecture; pass Classification/train.py's "
                        "model_final.pt")
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
        raise UserError("--data-root is required (or set data_root in the config's classification_crt "
                        "section)")
    info = read_classes(args.data_root)
    names = info["names"]
    split = optional_split(args.split, args.data_root)
    model, arch, ck = load_trained(args.weights, len(names), names)
    args.img_size = args.img_size or ck.get("img_size") or 224
    args.norm = args.norm or ck.get("norm") or "half"
    root = args.data_root
    kw = {"num_classes": len(names), "on_corrupt": args.on_corrupt}
    train_set = ImageList(os.path.join(root, "train"), args.train_list or [anno_path(root, "train")],
                          classification(args.img_size, True, args.norm, args.hflip), **kw)
    test_set = ImageList(os.path.join(root, "test"), [args.test_list or anno_path(root, "test")],
                         classification(args.img_size, False, args.norm), **kw)

    rt = setup(args.device)
    out = rundir.prepare(args, rt.is_main)
    sampler = (ClassBalancedSampler(train_set.targets, args.seed, rt.rank, rt.world_size)
               if args.sampler == "class_balanced" else None)
    train_loader = make_loader(train_set, args.batch_size, True, rt, args.workers, args.seed, sampler=sampler)
    test_loader = make_loader(test_set, eval_batch_size(args), False, rt, args.workers)
    model.fc.reset_parameters()
    net = FrozenBackbone(model, args.bn).to(rt.device)
    groups = groups_from_split(split, list(range(len(names))))
    best, scores = {}, []
    best_path = os.path.join(out, "tune_best.pt")
    if args.resume and args.tune_list and os.path.isfile(best_path):
        saved = checkpoint.load(best_path)
        scores = saved.pop("scores")
        best.update(saved)
    on_epoch_end = None
    if args.tune_list:
        if rt.distributed:
            raise UserError("--tune-list runs in one process; run crt.py without torchrun")
        held_out = ImageList(os.path.join(root, "train"), [args.tune_list],
                             classification(args.img_size, False, args.norm), **kw)
        tune_loader = make_loader(held_out, eval_batch_size(args), False, rt, args.workers)

        def on_epoch_end(epoch):
            rng = torch.random.get_rng_state()  # a DataLoader draws its seed: training stays as without it
            score = summarize(evaluate(net, tune_loader, rt, len(names), amp=args.amp))["mean_acc"]
            torch.random.set_rng_state(rng)
            print(f"epoch {epoch}: mean per-class accuracy {100 * score:.1f} on {args.tune_list}")
            scores.append(round(score, 6))
            if not best or score > best["score"]:
                best.update(score=score, epoch=epoch, state=copy.deepcopy(model.state_dict()))
            checkpoint.atomic_save({**best, "scores": scores}, best_path)  # --resume continues the choice
            net.train()
    cm = fit(net, train_loader, test_loader, args, rt, out, len(names), groups, extra_state={"names": names},
             desc="cRT epochs", on_epoch_end=on_epoch_end)
    if cm is None:  # --stop-after
        return
    if best and best["epoch"] != args.epochs - 1:
        model.load_state_dict(best["state"])
        cm = evaluate(net, test_loader, rt, len(names), amp=args.amp)
    if best:
        print(f"epochs chosen on {args.tune_list}: {best['epoch'] + 1} of {args.epochs} (mean per-class "
              f"accuracy {100 * best['score']:.1f})")
    if rt.is_main:
        export_classifier(model, cm, out, names, groups, split, f"cRT of {arch} on {info['dataset']}",
                          arch=arch, img_size=args.img_size, norm=args.norm, dataset=info["dataset"],
                          crt_of=os.path.abspath(args.weights))
        if best:
            write_json(os.path.join(out, "tuned.json"), {"epochs": best["epoch"] + 1, "of": args.epochs,
                                                         "tune_list": args.tune_list,
                                                         "tune_mean_acc": scores})
    cleanup()


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "classification_crt"))
