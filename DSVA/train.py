"""Train DSVA (a CLIP ViT with a global attribute head and local attribute prototypes) for zero-shot scene
classification, evaluating ZSL and GZSL after every epoch.

    python DSVA/train.py --config configs/rssdivcs/zsl_43.yaml --data-root RSSDIVCS  (= 10_dsva.sh zsl_43)
    python DSVA/train.py --config configs/synthetic.yaml                             (the embedded data set)

Recipe (docs/upstream.md; the defaults are the paper scripts'): episodes of 8 seen classes x 3 images, 300 per
epoch; epochs 0..--pretrain-epoch train only the prototypes and the ALE layer (Adam, lr 1e-4), later epochs
everything at 1e-6 x 0.9^(epoch // 10); the Adam state is reset every epoch as upstream. Reported: the local
(prototype) branch; ZSL accuracy among unseen classes and GZSL U, S, H with calibrated stacking gamma.

Model selection. Upstream picks the best of 30 test-set evaluations; results.md reports that epoch and the
last one. Honest figures in two runs: `--val-classes N` holds out N seen classes (and a fraction of the other
seen classes' images) as a validation split that picks the epoch (and, with --val-gamma-grid, the calibrated
stacking gamma), among epochs after the prototype phase (--val-min-epochs); `--val-run <that run> [more
folds]` then trains on all seen classes for that many epochs with that gamma (DSVA/selection.py: averaged over
the runs when several, each holding out other classes with --val-fold) and its last epoch is the honest figure
(scripts/11_dsva_synthetic.sh does both). The test set is evaluated for the logs only.

Writes runs/dsva/<name>/: metrics.jsonl (one line per epoch), ckpt_last.pt, model_final.pt (last epoch),
model_best.pt (best epoch on the validation split if --val-classes, else on the test set as upstream),
results.json / results.md (best-on-test, last and best-on-validation epochs), attention_maps.png.
Runs in one process (no torchrun), as upstream.
"""
import argparse
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from common import checkpoint, rundir
from common.clip import add_clip_args, load_clip, pretrained_or_random
from common.config import add_config_arg, parse_args, positive_int
from common.datasets import ImageList
from common.distributed import autocast, cleanup, grad_scaler, setup
from common.errors import UserError, cli
from common.options import add_loader_args
from common.resume import LastCheckpoint, save_last
from DSVA.episodes import EpisodeSampler, class_lookup, dsva_transform, normalisation
from DSVA.evaluate import BRANCHES, attention_png, figures, gamma_sweep, pct, pick_images, scores
from DSVA.losses import LossWeights, dsva_loss
from DSVA.model import DSVA, PAPER_CLIP, PAPER_CLIP_NOTE, describe_visual
from DSVA.selection import epochs_and_gamma_from, first_epoch
from DSVA.sources import add_data_args, carve_validation, load_zsl_data


def get_args_parser():
    p = argparse.ArgumentParser("DSVA training (zero-shot scene classification)")
    add_config_arg(p)
    add_data_args(p)
    g = p.add_argument_group("evaluation")
    g.add_argument("--setting", default="zsl", choices=["zsl", "gzsl"],
                   help="which figure picks the best epoch: ZSL accuracy or GZSL H (both are always "
                        "computed)")
    g.add_argument("--gamma", type=float, default=1e-4,
                   help="calibrated stacking: subtracted from seen-class probabilities in GZSL (upstream: "
                        "1e-4; 1.4e-4 for 50/20)")
    g.add_argument("--branch", default="local", choices=list(BRANCHES),
                   help="reported scores: local (prototypes, upstream's 'layer'), global (ALE) or proposal")
    g.add_argument("--val-classes", type=int, default=0,
                   help="honest selection: hold out this many seen classes as validation unseen classes "
                        "(0: select on the test set only, as upstream)")
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="with --val-classes: fraction of the other seen classes' images held out as "
                        "validation seen images")
    g.add_argument("--val-gamma-grid", type=float, nargs="*", default=[],
                   help="with --val-classes: every epoch, take the gamma of this list with the best "
                        "validation H (instead of --gamma)")
    g.add_argument("--val-fold", type=int, default=0,
                   help="with --val-classes: which classes are held out (fold k holds out the k-th group of "
                        "--val-classes classes of a seeded order of the seen classes; 0: the first)")
    g.add_argument("--val-min-epochs", type=int, default=None,
                   help="the validation may choose only this many epochs or more (default: the prototype "
                        "phase, --pretrain-epoch + 1; stopped inside it, the model's GZSL calibration swings "
                        "between seeds; 1: any epoch)")
    g.add_argument("--val-run", nargs="+", default=None,
                   help="folders of earlier runs trained with --val-classes (one per fold): train on all "
                        "seen classes for the epochs and with the gamma of the best validation figures, "
                        "averaged over the runs (DSVA/selection.py); report the last epoch (honest)")
    g.add_argument("--eval-batch-size", type=positive_int, default=64)
    g.add_argument("--vis-images", type=int, default=4, help="test images in attention_maps.png")
    g = p.add_argument_group("model")
    add_clip_args(g, "ViT-B-32", PAPER_CLIP, model_note=" (a ViT)", pretrained_note=PAPER_CLIP_NOTE)
    g.add_argument("--ln-post", action="store_true",
                   help="apply CLIP's final LayerNorm to all tokens (upstream: the encoder output without "
                        "it)")
    g.add_argument("--norm", default="clip", choices=["clip", "imagenet"],
                   help="input normalisation: the CLIP's own mean/std, or ImageNet's as upstream")
    g.add_argument("--proposal-start-epoch", type=int, default=None,
                   help="proposal branch on in epochs after this one (-1: always, as 5 of the 6 paper "
                        "scripts); default off")
    g.add_argument("--proposal-threshold", type=float, default=1.0, help="upstream --pro_thr")
    g.add_argument("--proposal-weight", type=float, default=1.0, help="upstream --pro_weight")
    g = p.add_argument_group("loss weights")
    g.add_argument("--xe", type=float, default=1.0, help="global class cross-entropy")
    g.add_argument("--attri", type=float, default=1e-2, help="global attribute regression (MSE)")
    g.add_argument("--l-xe", type=float, default=1.0, help="local class cross-entropy")
    g.add_argument("--l-attri", type=float, default=8e-2, help="local attribute regression (MSE)")
    g.add_argument("--cpt", type=float, default=1e-9,
                   help="attention concentration, after the prototype epochs")
    g.add_argument("--regular", type=float, default=0.0,
                   help="group lasso on the ALE weights (50/20 GZSL: 5e-6)")
    g.add_argument("--l-regular", type=float, default=0.0,
                   help="group lasso on the prototypes (50/20 GZSL: 5e-4)")
    g.add_argument("--logits-ce", action="store_true",
                   help="cross-entropy on logits (fix); default: on softmax probabilities as upstream")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--pretrain-epoch", type=int, default=4,
                   help="epochs 0..N train only the prototypes and the ALE layer")
    g.add_argument("--pretrain-lr", type=float, default=1e-4)
    g.add_argument("--classifier-lr", type=float, default=1e-6,
                   help="lr of all parameters after --pretrain-epoch")
    g.add_argument("--lr-decay", type=float, default=0.9, help="lr x this every --lr-decay-every epochs")
    g.add_argument("--lr-decay-every", type=int, default=10)
    g.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (beta2 0.999)")
    g.add_argument("--reset-optimizer", action=argparse.BooleanOptionalAction, default=True,
                   help="re-create Adam every epoch as upstream; --no-reset-optimizer keeps its state per "
                        "phase")
    g.add_argument("--ways", type=int, default=8, help="classes per episode")
    g.add_argument("--shots", type=int, default=3, help="images per class per episode")
    g.add_argument("--batches-per-epoch", type=int, default=300)
    add_loader_args(g, eval_batch_size=False)
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision on CUDA")
    g.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulate a crash
    rundir.add_run_args(p, "dsva")
    return p


# ---------------------------------------------------------------------------------------------- phases

def head_only(epoch: int, args) -> bool:
    return epoch <= args.pretrain_epoch


def epoch_lr(epoch: int, args) -> float:
    if head_only(epoch, args):
        return args.pretrain_lr
    return args.classifier_lr * args.lr_decay ** (epoch // args.lr_decay_every)


def set_trainable(model: DSVA, head: bool) -> None:
    """Prototype epochs: only the prototypes and the ALE layer get gradients (the ViT is not computed
    twice)."""
    for p in model.parameters():
        p.requires_grad_(not head)
    for p in model.head_parameters():
        p.requires_grad_(True)


def make_optimizer(model: DSVA, epoch: int, args):
    params = model.head_parameters() if head_only(epoch, args) else list(model.parameters())
    return torch.optim.Adam(params, lr=epoch_lr(epoch, args), betas=(args.beta1, 0.999))


def proposal_on(epoch: int, args) -> bool:
    return args.proposal_start_epoch is not None and epoch > args.proposal_start_epoch


def selection_score(figures: dict, args) -> float:
    v = figures[args.branch]["h" if args.setting == "gzsl" else "zsl"]
    return -1.0 if v is None or np.isnan(v) else v


# ---------------------------------------------------------------------------------------------- loops

def train_epoch(model, loader, optimizer, scaler, class_att, row_att, lut, weights, args, epoch, rt) -> dict:
    model.train()
    sums, n = {}, 0
    correct = torch.zeros((), device=rt.device)
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not rt.is_main, dynamic_ncols=True)
    for x, y in bar:
        x = x.to(rt.device, non_blocking=True)
        target = lut[y].to(rt.device, non_blocking=True)
        with autocast(rt, args.amp):
            out = model(x, class_att, proposal=proposal_on(epoch, args))
            loss, parts = dsva_loss(out, target, row_att[target], model, weights,
                                    concentrate=not head_only(epoch, args), double_softmax=not args.logits_ce)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # the scaler acts only for fp16 autocast (GPUs without native bf16)
        scaler.step(optimizer)
        scaler.update()
        parts["loss"] = loss.detach()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0) + v.float() * len(y)
        correct += (out[args.branch if args.branch in out else "local"].argmax(1) == target).sum()
        n += len(y)
    return {**{f"train_{k}": float(v) / n for k, v in sums.items()}, "train_acc": float(correct) / n}


def flat(prefix: str, figures: dict) -> dict:
    return {f"{prefix}_{b}_{k}": v for b, f in figures.items() for k, v in f.items()}


def summary_row(history: list, key: str, args) -> dict | None:
    """The epoch with the best score on `key` ('test' or 'val'; 'val' among epochs of at least
    --val-min-epochs), with its test figures."""
    rows = [r for r in history if r.get(key)]
    if key == "val":
        rows = rows[first_epoch(args.val_min_epochs, len(rows)):]
    if not rows:
        return None
    best = max(rows, key=lambda r: selection_score(r[key], args))  # first of equal scores, as upstream
    return {"epoch": best["epoch"], "gamma": best["gamma"], **best["test"][args.branch],
            "all_branches": best["test"]}


def results_markdown(res: dict, data, args, info: dict) -> str:
    title = (f"DSVA on {data.dataset}, split {args.split if not args.split_file else args.split_file} "
             f"({len(data.seen)} seen / {len(data.unseen)} unseen classes), {args.branch} branch")
    weights = pretrained_or_random(args.clip_pretrained) or "random initialisation"
    lines = [f"## {title}", "",
             f"Backbone `{args.clip_model}` ({weights}); attributes: {info['attributes']}; {args.epochs} "
             f"epochs x {args.batches_per_epoch} episodes of {args.ways} x {args.shots}; "
             f"{info['seconds']:.0f} s "
             f"on {info['device']}. Chance: ZSL {100 / len(data.unseen):.1f} %." + (
                 f" Epochs and gamma chosen on the validation split(s) of {' '.join(args.val_run)}: the "
                 f"last-epoch row is the honest figure." if args.val_run else ""), "",
             "| epoch chosen by | epoch | ZSL acc | GZSL U | GZSL S | GZSL H | gamma |",
             "|---|---|---|---|---|---|---|"]
    for key, label in (("best_test", "best on test (upstream)"), ("last", "last epoch"),
                       ("best_val", "best on validation")):
        r = res.get(key)
        if r:
            lines.append(f"| {label} | {r['epoch']} | {pct(r['zsl'])} | {pct(r['u'])} | {pct(r['s'])} | "
                         f"{pct(r['h'])} | {r['gamma']:g} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- steps

def training_split(args, data) -> tuple:
    """(training images, training classes, the validation split of --val-classes or None)."""
    if not args.val_classes:
        return data.train, data.seen, None
    val = carve_validation(data.train, data.seen, args.val_classes, args.val_fraction, args.seed,
                           args.val_fold)
    return val["train"], val["train_classes"], val


def check_args(args, train_classes: list) -> None:
    """The checks before the run folder, and the epochs and gamma of --val-run."""
    if args.val_min_epochs is None:
        args.val_min_epochs = args.pretrain_epoch + 1
    if args.val_run:
        args.epochs, args.gamma, pick = epochs_and_gamma_from(args.val_run, args.setting, args.val_min_epochs)
        print(f"from {len(args.val_run)} validation run(s) {' '.join(args.val_run)}: {args.epochs} epochs, "
              f"gamma {args.gamma:g} (mean validation ZSL {pct(pick['zsl'])}, U {pct(pick['u'])}, "
              f"S {pct(pick['s'])}, H {pct(pick['h'])})")
    if args.val_gamma_grid and not args.val_classes:
        print(f"note: --val-gamma-grid is used only with --val-classes; gamma is {args.gamma:g}")
    if args.ways > len(train_classes):  # before the run folder (the sampler checks it again)
        raise UserError(f"--ways {args.ways} is more than the {len(train_classes)} training classes; lower "
                        f"--ways")
    for flag in ("ways", "shots", "batches_per_epoch", "epochs"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")


def build_model(args, bundle, data, rt) -> tuple:
    """(DSVA on CLIP's vision tower, on the device; the image size, mean and std; the backbone's
    description)."""
    grouped_terms = args.regular or args.l_regular or args.proposal_start_epoch is not None
    if not data.attribute_groups and grouped_terms:
        print("note: the attributes come without groups; the group lasso and the proposal use one group of "
              "all")
    visual = bundle.model.visual
    mean, std = normalisation(args.norm, bundle.mean, bundle.std)
    model = DSVA(visual, data.attributes.shape[1], data.attribute_groups, args.ln_post,
                 args.proposal_threshold, args.proposal_weight)
    model.to(rt.device)
    return model, (bundle.image_size, mean, std), describe_visual(bundle.name, visual)


@dataclass
class Batches:
    """The loaders and the class-attribute matrices that training and evaluation read."""
    sampler: EpisodeSampler
    train: DataLoader
    test_seen: DataLoader
    test_unseen: DataLoader
    val_seen: DataLoader | None
    val_unseen: DataLoader | None
    all_att: torch.Tensor  # [attributes, classes]: test scores against every class
    train_att: torch.Tensor  # [attributes, training classes]
    row_att: torch.Tensor  # [training classes, attributes]
    lut: torch.Tensor  # class id -> index among the training classes


def build_batches(args, data, train_items: list, train_classes: list, val: dict | None, image: tuple,
                  rt) -> Batches:
    size, mean, std = image
    train_set = ImageList(items=train_items, transform=dsva_transform(size, True, mean, std),
                          on_corrupt=args.on_corrupt, check_files=False)
    sampler = EpisodeSampler(train_set.targets, args.ways, args.shots, args.batches_per_epoch, args.seed)
    loader_kw = {"num_workers": args.workers, "pin_memory": rt.cuda}
    test_tf = dsva_transform(size, False, mean, std)

    def eval_loader(items):
        images = ImageList(items=items, transform=test_tf, on_corrupt=args.on_corrupt, check_files=False)
        return DataLoader(images, batch_size=args.eval_batch_size, shuffle=False, **loader_kw)

    att = torch.tensor(data.attributes, dtype=torch.float32)  # [classes, attributes]
    return Batches(sampler, DataLoader(train_set, batch_sampler=sampler, **loader_kw),
                   eval_loader(data.test_seen), eval_loader(data.test_unseen),
                   eval_loader(val["val_seen"]) if val else None,
                   eval_loader(val["val_unseen"]) if val else None,
                   att.T.contiguous().to(rt.device), att[train_classes].T.contiguous().to(rt.device),
                   att[train_classes].to(rt.device), class_lookup(train_classes, len(data.names)))


def run_meta(args, data, backbone: dict, image: tuple) -> dict:
    """What model_final.pt and model_best.pt hold beside the weights (DSVA/test.py reads them)."""
    size, mean, std = image
    return dict(**backbone, ln_post=args.ln_post, image_size=size, mean=list(mean), std=list(std),
                names=data.names, seen=data.seen, unseen=data.unseen, dataset=data.dataset,
                class_attributes=data.attributes.tolist(), attribute_names=data.attribute_names,
                attribute_groups=data.attribute_groups, gamma=args.gamma, branch=args.branch,
                setting=args.setting, args=vars(args))


@dataclass
class Progress:
    """Where training stands: the epochs' figures so far, the next epoch, and the Adam kept across epochs
    (--no-reset-optimizer) with the phase it belongs to."""
    history: list = field(default_factory=list)
    start: int = 0
    optimizer: torch.optim.Optimizer | None = None
    phase: bool | None = None


def resume(args, out: str, model, scaler, log) -> Progress:
    """--resume: the model, loss scaler, history and random state of ckpt_last.pt, and its Adam when the next
    epoch keeps it (--no-reset-optimizer, same phase)."""
    last = LastCheckpoint(out)
    start = last.restore({"model": model, "scaler": scaler}, log)
    progress = Progress(last["history"], start)
    head = head_only(start, args)
    if last.get("optimizer") is not None and start <= args.epochs - 1 and head == head_only(last.done, args):
        set_trainable(model, head)
        progress.optimizer, progress.phase = make_optimizer(model, start, args), head
        progress.optimizer.load_state_dict(last["optimizer"])
    return progress


def evaluate_epoch(model, batches: Batches, data, val: dict | None, epoch: int, args, rt) -> dict:
    """The epoch's figures on the test set (and on the validation split, with the gamma it picks)."""
    proposal = proposal_on(epoch, args)
    gamma, extra = args.gamma, {}
    if val:
        scored = scores(model, batches.val_seen, batches.val_unseen, batches.all_att, rt, args.amp, proposal)
        sweep = gamma_sweep(scored, val["train_classes"], val["val_classes"], args.val_gamma_grid,
                            args.branch)
        if sweep:  # the grid's gamma with the best validation H (the first of equal ones)
            gamma = sweep[int(np.argmax([r["h"] for r in sweep]))]["gamma"]
        extra = {"val": figures(scored, val["train_classes"], val["val_classes"], gamma), "val_sweep": sweep}
    test = scores(model, batches.test_seen, batches.test_unseen, batches.all_att, rt, args.amp, proposal)
    return {"epoch": epoch, "gamma": gamma, "test": figures(test, data.seen, data.unseen, gamma), **extra}


def train_epochs(args, model, batches: Batches, data, val: dict | None, scaler, progress: Progress,
                 meta: dict, out: str, log, rt) -> bool:
    """Epochs progress.start..--epochs with their metrics rows, model_best.pt and ckpt_last.pt; False where
    --stop-after ended the run early (tests: a crash)."""
    weights = LossWeights(args.xe, args.attri, args.l_xe, args.l_attri, args.cpt, args.regular,
                          args.l_regular)
    history, optimizer, opt_phase = progress.history, progress.optimizer, progress.phase
    best_key = "val" if val else "test"
    earliest = first_epoch(args.val_min_epochs, args.epochs) if val else 0  # model_best.pt: as the choice
    best_score = max((selection_score(r[best_key], args) for r in history if r["epoch"] >= earliest),
                     default=-np.inf)
    for epoch in tqdm(range(progress.start, args.epochs), desc="epochs", initial=progress.start,
                      total=args.epochs):
        head = head_only(epoch, args)
        set_trainable(model, head)
        if args.reset_optimizer or optimizer is None or opt_phase != head:
            optimizer, opt_phase = make_optimizer(model, epoch, args), head
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(epoch, args)
        batches.sampler.set_epoch(epoch)
        row = {"epoch": epoch, "lr": epoch_lr(epoch, args), "phase": "prototypes" if head else "all",
               **train_epoch(model, batches.train, optimizer, scaler, batches.train_att, batches.row_att,
                             batches.lut, weights, args, epoch, rt)}
        figs = evaluate_epoch(model, batches, data, val, epoch, args, rt)
        row["gamma"] = figs["gamma"]
        if val:
            row.update(flat("val", figs["val"]))
        history.append(figs)
        row.update(flat("test", figs["test"]))
        log.write(**row)
        t = figs["test"][args.branch]
        tqdm.write(f"epoch {epoch} loss {row['train_loss']:.4f} | {args.branch}: ZSL {pct(t['zsl'])} | GZSL "
                   f"U {pct(t['u'])} S {pct(t['s'])} H {pct(t['h'])}" +
                   (f" | val {args.setting} {pct(selection_score(figs['val'], args))}" if val else ""))
        score = selection_score(figs[best_key], args)
        if score > best_score and epoch >= earliest:
            best_score = score
            checkpoint.export_weights(model, os.path.join(out, "model_best.pt"), epoch=epoch,
                                      selected_on=best_key, figures=figs["test"],
                                      proposal=proposal_on(epoch, args), **{**meta, "gamma": figs["gamma"]})
        save_last(out, rt.is_main, {"model": model, "scaler": scaler}, epoch=epoch,
                  optimizer=None if args.reset_optimizer else optimizer.state_dict(), history=history,
                  args=vars(args))
        if args.stop_after is not None and epoch + 1 >= args.stop_after:
            return False
    return True


def report(args, model, data, val: dict | None, history: list, batches: Batches, image: tuple, meta: dict,
           seconds: float, out: str, rt) -> None:
    """model_final.pt, results.json and results.md (best-on-test, last and best-on-validation epochs), and
    attention_maps.png."""
    res = {"dataset": data.dataset, "split": args.split, "setting": args.setting, "branch": args.branch,
           "gamma": args.gamma, "seen": [data.names[c] for c in data.seen],
           "unseen": [data.names[c] for c in data.unseen], "notes": data.notes,
           "best_test": summary_row(history, "test", args), "best_val": summary_row(history, "val", args),
           "last": {"epoch": history[-1]["epoch"], "gamma": history[-1]["gamma"],
                    **history[-1]["test"][args.branch], "all_branches": history[-1]["test"]}}
    if val:
        res["validation"] = {"train_classes": [data.names[c] for c in val["train_classes"]],
                             "val_classes": [data.names[c] for c in val["val_classes"]],
                             "fold": args.val_fold}
        res["validation_curve"] = [{"epoch": r["epoch"], "gamma": r["gamma"], **r["val"][args.branch],
                                    "sweep": r.get("val_sweep") or []} for r in history]
    last = history[-1]["epoch"]
    checkpoint.export_weights(model, os.path.join(out, "model_final.pt"), epoch=last,
                              figures=history[-1]["test"], proposal=proposal_on(last, args),
                              **{**meta, "gamma": history[-1]["gamma"]})
    info = {"attributes": args.attributes or "the data set's own matrix", "seconds": seconds,
            "device": "GPU" if rt.cuda else f"CPU ({torch.get_num_threads()} threads)"}
    write_results(out, res, results_markdown(res, data, args, info))
    _, mean, std = image
    picks = pick_images(data.test_unseen, data.unseen, args.vis_images)
    attention_png(model, batches.test_unseen.dataset, picks, batches.all_att, data.names,
                  data.attribute_names, mean, std, os.path.join(out, "attention_maps.png"), rt, data.unseen)
    print(f"weights: {os.path.join(out, 'model_final.pt')}; results: {os.path.join(out, 'results.md')}")


def write_results(out: str, res: dict, markdown: str) -> None:
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown)
    print(markdown)


# ---------------------------------------------------------------------------------------------- main

@cli
def main(args):
    start_time = time.time()
    data = load_zsl_data(args)
    train_items, train_classes, val = training_split(args, data)
    check_args(args, train_classes)
    bundle = load_clip(args.clip_model, pretrained_or_random(args.clip_pretrained))
    rt = setup(args.device)
    if rt.distributed:
        raise UserError("DSVA/train.py runs in one process (upstream used one GPU); start it without "
                        "torchrun")
    out = rundir.prepare(args, True)
    for note in data.notes:
        print(f"note: {note}")

    model, image, backbone = build_model(args, bundle, data, rt)
    del bundle  # the text tower is not needed
    batches = build_batches(args, data, train_items, train_classes, val, image, rt)
    print(f"{data.dataset} split {args.split}: {len(train_items)} training images of {len(train_classes)} "
          f"classes, {len(data.test_seen)} seen / {len(data.test_unseen)} unseen test images; "
          f"{data.attributes.shape[1]} attributes; tokens {model.grid}x{model.grid}+1 of width "
          f"{model.encoder.width}; run folder {out}")

    log = rundir.MetricsLog(out, report_to=args.report_to)
    scaler = grad_scaler(rt, args.amp)
    progress = resume(args, out, model, scaler, log) if args.resume else Progress()
    meta = run_meta(args, data, backbone, image)
    if train_epochs(args, model, batches, data, val, scaler, progress, meta, out, log, rt):
        seconds = time.time() - start_time
        report(args, model, data, val, progress.history, batches, image, meta, seconds, out, rt)
    cleanup()


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "dsva"))
