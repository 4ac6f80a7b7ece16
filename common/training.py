"""The supervised training loop shared by Classification/train.py and KMDN/train.py.

Adam with weight decay and a step schedule (MultiStepLR) by default (upstream's recipe); SGD with momentum and
a cosine schedule (the long-tail literature's) by flag; exact --resume from <run>/ckpt_last.pt, DDP under
torchrun, optional torch.compile, an evaluation every --eval-every epochs, one metrics.jsonl row per epoch.
"""
import argparse

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from common import rundir
from common.config import non_negative_int, positive_int
from common.distributed import Runtime, cleanup, grad_scaler
from common.engine import evaluate, train_one_epoch
from common.loaders import set_epoch
from common.metrics import summarize
from common.options import add_loader_args
from common.resume import LastCheckpoint, save_last
from common.transforms import NORMALISATIONS


def add_image_args(g, img_size: int | None = 224, norm: str | None = "half") -> None:
    """Input size, normalisation, flip, loading: the data flags of every supervised stage (None: a default the
    script derives, e.g. from the models it starts from)."""
    g.add_argument("--img-size", type=int, default=img_size)
    g.add_argument("--norm", default=norm, choices=list(NORMALISATIONS),
                   help="'half' = [-1,1] as upstream; 'imagenet' matches ImageNet-pretrained weights")
    g.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=True)
    add_loader_args(g)


OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("step", "cosine")


def add_fit_args(p, epochs: int, lr_drop_epochs: list, batch_size: int = 32, optimizer: str = "adam",
                 lr: float = 1e-3, weight_decay: float = 1e-4,
                 schedule: str = "step") -> argparse._ArgumentGroup:
    """The flags fit() reads; returns the speed group so that a script can add its own output flags."""
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=positive_int, default=epochs)
    g.add_argument("--batch-size", type=positive_int, default=batch_size, help="per process")
    g.add_argument("--optimizer", default=optimizer, choices=list(OPTIMIZERS),
                   help="adam (upstream's) or sgd with --momentum (the long-tail literature's)")
    g.add_argument("--momentum", type=float, default=0.9, help="of --optimizer sgd")
    g.add_argument("--lr", type=float, default=lr)
    g.add_argument("--weight-decay", type=float, default=weight_decay)
    g.add_argument("--schedule", default=schedule, choices=list(SCHEDULES),
                   help="step: x --lr-gamma at each of --lr-drop-epochs; cosine: from --lr to 0 over "
                        "--epochs (stepped once per epoch)")
    g.add_argument("--lr-drop-epochs", type=non_negative_int, nargs="*", default=lr_drop_epochs,
                   help=f"epochs from which the lr is multiplied by --lr-gamma once more (upstream: "
                        f"{' '.join(map(str, lr_drop_epochs))})")
    g.add_argument("--lr-gamma", type=float, default=0.1)
    g = p.add_argument_group("speed and output")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision on CUDA")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True, help="on CUDA")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--eval-every", type=positive_int, default=1,
                   help="test every N epochs (and always after the last)")
    g.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulate a crash
    return g


def make_optimizer(model, args) -> tuple:
    """The optimiser over the parameters that train, and its per-epoch schedule, from add_fit_args' flags."""
    params = [p for p in model.parameters() if p.requires_grad]
    if getattr(args, "optimizer", "adam") == "sgd":
        optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum,
                                    weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    if getattr(args, "schedule", "step") == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    else:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, args.lr_drop_epochs, args.lr_gamma)
    return optimizer, scheduler


def fit(model, train_loader, test_loader, args, rt: Runtime, out: str, num_classes: int,
        groups: dict | None = None, extra_state: dict | None = None, on_epoch_end=None, desc: str = "epochs",
        loss_for_epoch=None):
    """Train `model` (already on rt.device) for args.epochs; returns the last test confusion matrix, or None
    when --stop-after ended the run early. extra_state is stored in ckpt_last.pt (common/resume.py);
    on_epoch_end(epoch) runs on rank 0 before it is written; loss_for_epoch(epoch) -> loss_fn replaces plain
    cross-entropy (see train_one_epoch)."""
    optimizer, scheduler = make_optimizer(model, args)
    scaler = grad_scaler(rt, args.amp)
    log = rundir.MetricsLog(out, rt.is_main, args.report_to)
    start = 0
    if args.resume:
        start = LastCheckpoint(out).restore({"model": model, "optimizer": optimizer, "scheduler": scheduler,
                                             "scaler": scaler}, log, rt.is_main)
    wrapped = DDP(model, device_ids=[rt.local_rank] if rt.cuda else None) if rt.distributed else model
    net = torch.compile(wrapped) if args.compile else wrapped
    speed = {"amp": args.amp, "channels_last": args.channels_last}

    cm = None
    for epoch in tqdm(range(start, args.epochs), desc=desc, disable=not rt.is_main, initial=start,
                      total=args.epochs):
        set_epoch(train_loader, epoch)
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(net, train_loader, optimizer, rt, desc=f"epoch {epoch}", scaler=scaler,
                             loss_fn=loss_for_epoch(epoch) if loss_for_epoch else None, **speed)
        scheduler.step()
        row = {"epoch": epoch, "lr": lr, "train_loss": tr["loss"], "train_acc": tr["acc"]}
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            cm = evaluate(net, test_loader, rt, num_classes, **speed)
            res = summarize(cm, groups)
            row.update({f"test_{k}": v for k, v in res.items() if k != "per_class_f1"})
            if rt.is_main:
                tqdm.write(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                    for k, v in row.items() if not isinstance(v, list)))
        log.write(**row)
        if rt.is_main and on_epoch_end is not None:
            on_epoch_end(epoch)
        save_last(out, rt.is_main, {"model": model, "optimizer": optimizer, "scheduler": scheduler,
                                    "scaler": scaler}, epoch=epoch, args=vars(args), **(extra_state or {}))
        if args.stop_after is not None and epoch + 1 >= args.stop_after:
            cleanup()
            return None
    if cm is None:  # resumed after the last epoch
        cm = evaluate(net, test_loader, rt, num_classes, **speed)
    return cm
