"""The supervised training loop shared by Classification/train.py and KMDN/train.py.

Adam with weight decay, a step schedule (MultiStepLR), exact --resume from <run>/ckpt_last.pt, DDP under
torchrun, optional torch.compile, an evaluation every --eval-every epochs, one metrics.jsonl row per epoch.
"""
import os

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from common import checkpoint, rundir
from common.distributed import Runtime, cleanup
from common.engine import evaluate, train_one_epoch
from common.loaders import set_epoch
from common.metrics import summarize


def fit(model, train_loader, test_loader, args, rt: Runtime, out: str, num_classes: int, groups: dict | None = None,
        extra_state: dict | None = None, on_epoch_end=None, desc: str = "epochs"):
    """Train `model` (already on rt.device) for args.epochs; returns the last test confusion matrix, or None when
    --stop-after ended the run early. extra_state is stored in ckpt_last.pt; on_epoch_end(epoch) runs on rank 0."""
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, args.lr_drop_epochs, args.lr_gamma)
    ckpt_path = os.path.join(out, "ckpt_last.pt")
    log = rundir.MetricsLog(out, rt.is_main)
    start = 0
    if args.resume:
        ck = checkpoint.load(ckpt_path)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        checkpoint.set_rng_state(ck["rng"])
        start = ck["epoch"] + 1
        log.truncate_after(ck["epoch"])
        if rt.is_main:
            print(f"resumed from {ckpt_path} at epoch {start}")
    wrapped = DDP(model, device_ids=[rt.local_rank] if rt.cuda else None) if rt.distributed else model
    net = torch.compile(wrapped) if args.compile else wrapped
    speed = dict(amp=args.amp, channels_last=args.channels_last)

    cm = None
    for epoch in tqdm(range(start, args.epochs), desc=desc, disable=not rt.is_main, initial=start,
                      total=args.epochs):
        set_epoch(train_loader, epoch)
        lr = optimizer.param_groups[0]["lr"]
        tr = train_one_epoch(net, train_loader, optimizer, rt, desc=f"epoch {epoch}", **speed)
        scheduler.step()
        row = {"epoch": epoch, "lr": lr, "train_loss": tr["loss"], "train_acc": tr["acc"]}
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            cm = evaluate(net, test_loader, rt, num_classes, **speed)
            res = summarize(cm, groups)
            row.update({f"test_{k}": v for k, v in res.items() if k != "per_class_f1"})
            if rt.is_main:
                tqdm.write(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                                    if not isinstance(v, list)))
        log.write(**row)
        if rt.is_main:
            if on_epoch_end is not None:
                on_epoch_end(epoch)
            checkpoint.atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(), "epoch": epoch, "rng": checkpoint.rng_state(),
                                    "args": vars(args), **(extra_state or {})}, ckpt_path)
        if args.stop_after is not None and epoch + 1 >= args.stop_after:
            cleanup()
            return None
    if cm is None:  # resumed after the last epoch
        cm = evaluate(net, test_loader, rt, num_classes, **speed)
    return cm
