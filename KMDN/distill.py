"""KMDN stage 2: knowledge mutual distillation of the head and tail models.

    python KMDN/distill.py --config configs/dior.yaml --name dior      -> runs/kmdn/dior/distill/

Starts from the stage-1 models (default: runs/kmdn/<name>/{head,tail}/model_final.pt, i.e. the sibling folders
of this run's folder). In the first --interval epochs the tail model teaches the head model on head images,
in the next --interval epochs the head model teaches the tail model on tail images, alternating after that.
Student loss: CE + alpha * MSE(student layer3, teacher layer3) (--feature-loss: upstream's plain MSE or a
scale- or channel-blind one); the teacher is frozen in eval mode under no_grad. One Adam per model; the
student's lr is set at the start of each epoch by the global epoch index.

Writes head_model.pt and tail_model.pt (the part-model format of common/part_model.py; tail_model.pt is what
CDTG is conditioned on), ckpt_last.pt (both models and optimisers; common/resume.py) for an exact --resume,
metrics.jsonl, a per-class report per part in head/ and tail/, and summary.md / summary.json comparing stage-1
and distilled accuracy.
"""
import argparse
import json
import os
import time

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from common import checkpoint, rundir
from common.config import add_config_arg, parse_args
from common.distributed import all_reduce_sum, cleanup, setup
from common.engine import evaluate, train_one_epoch
from common.errors import UserError, cli
from common.loaders import make_loader, set_epoch
from common.metrics import summarize
from common.options import eval_batch_size
from common.part_model import PARTS, check_part, model_from_file, read_part_file, save_part_model
from common.report import write_report
from common.resume import LastCheckpoint, save_last
from common.split import load_data_split
from common.training import add_fit_args, add_image_args
from KMDN.model import FEATURE_LOSSES, DistillLoss, distill_lr, freeze, part_dataset, phase


def get_args_parser():
    p = argparse.ArgumentParser("KMDN stage 2: mutual distillation")
    add_config_arg(p)
    g = p.add_argument_group("data")
    g.add_argument("--data-root", default=None,
                   help="processed data root (classes.json, anno/, train/, test/)")
    g.add_argument("--split", default=None, help="split.json from data/split.py (default: <root>/split.json)")
    add_image_args(g, img_size=None, norm=None)  # default: the stage-1 models' size and normalisation
    g = p.add_argument_group("starting point")
    g.add_argument("--head-init", default=None,
                   help="stage-1 head model (default: <run folder>/../head/model_final.pt; upstream used its "
                        "epoch-0 file: pass .../head/model_epoch_0.pt to reproduce that)")
    g.add_argument("--tail-init", default=None,
                   help="stage-1 tail model (default: <run folder>/../tail/model_final.pt); either flag also "
                        "takes the original UModel_epoch_<e>.pth / RModel_epoch_<e>.pth")
    g.add_argument("--fresh-fc", action=argparse.BooleanOptionalAction, default=True,
                   help="re-initialise both classifiers (fc) before distilling, as upstream dropped fc.* "
                        "from the stage-1 weights; --no-fresh-fc keeps the trained ones")
    g = p.add_argument_group("distillation")
    g.add_argument("--interval", type=int, default=50,
                   help="epochs per phase: tail->head for the first N, head->tail for the next N, "
                        "alternating")
    g.add_argument("--alpha", type=float, default=0.2, help="weight of the layer3 feature MSE")
    g.add_argument("--feature-loss", default="mse", choices=sorted(FEATURE_LOSSES),
                   help="mse: upstream's, the mean squared difference of the two layer3 maps; normalised: "
                        "the same after scaling each sample's map to mean square 1 (2 (1 - cosine)); "
                        "similarity: the MSE of the batch's image-to-image cosine matrices, blind to which "
                        "channel holds what")
    # the student's lr is set at the start of each epoch from the global epoch: 1e-3 up to 30, then x0.1 from
    # 31, 61, 91
    add_fit_args(p, epochs=100, lr_drop_epochs=[31, 61, 91], batch_size=64)
    p.add_argument("--lr-per-phase", action=argparse.BooleanOptionalAction, default=False,
                   help="count --lr-drop-epochs from each phase's first epoch, so every phase starts at --lr "
                        "(upstream: from the global epoch)")
    rundir.add_run_args(p, "kmdn")
    for a in p._actions:
        if a.dest == "output_dir":
            a.help = "run folder (default: runs/kmdn/<name>/distill)"
    return p


def load_stage1(args, split: dict, run_folder: str) -> dict:
    """{part: (file dict, path)} of the two stage-1 models, checked against split.json and each other."""
    found = {}
    for part in PARTS:
        flag = f"--{part}-init"
        parent = os.path.dirname(os.path.normpath(run_folder))  # normpath: X/distill/ -> X
        path = getattr(args, f"{part}_init") or os.path.join(parent, part, "model_final.pt")
        if not os.path.isfile(path):
            raise UserError(f"stage-1 {part} model {path} does not exist; run KMDN/train.py --part {part} "
                            f"first or pass {flag}")
        ck = read_part_file(path, f"{flag} file", split=split, part=part)
        check_part(ck, path, part, split, flag)
        found[part] = (ck, path)
    (h, hp), (t, tp) = found["head"], found["tail"]
    for key in ("feature_channels", "img_size", "norm"):
        if h[key] != t[key]:
            raise UserError(f"the stage-1 models differ in {key} ({hp}: {h[key]}, {tp}: {t[key]}); train "
                            f"both parts with the same --model, --img-size and --norm")
    return found


def summary_markdown(before: dict, after: dict, metas: dict, dataset: str) -> str:
    lines = [f"## KMDN on {dataset}: test accuracy of each part on its own classes (%)", "",
             "| model | classes | stage 1 OA | distilled OA | stage 1 macro-F1 | distilled macro-F1 |",
             "|---|---|---|---|---|---|"]
    for part in PARTS:
        b, a = before[part], after[part]
        lines.append(f"| {part} ({metas[part]['arch']}) | {metas[part]['num_classes']} | {100 * b['oa']:.2f} "
                     f"| {100 * a['oa']:.2f} | {100 * b['macro_f1']:.2f} | {100 * a['macro_f1']:.2f} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ steps


def starting_point(args, split: dict) -> tuple:
    """(the run's ckpt_last.pt with --resume, else None; the stage-1 files {part: (dict, path)}, or None on
    --resume; each part's metadata). The resumed run's own checkpoint holds everything: stage-1 files may have
    moved since."""
    last, stage1 = None, None
    if args.resume:
        last = LastCheckpoint(args.output_dir, "--resume: distillation checkpoint")
        metas = last["metas"]
        if any(metas[p]["classes"] != split[p] for p in PARTS):
            raise UserError(f"{last.path} was distilled with another split.json; pass that split or start a "
                            f"new run")
        args.head_init, args.tail_init = last["args"]["head_init"], last["args"]["tail_init"]
    else:
        stage1 = load_stage1(args, split, args.output_dir)
        metas = {part: {k: v for k, v in f.items() if k != "model"} for part, (f, _) in stage1.items()}
        args.head_init, args.tail_init = stage1["head"][1], stage1["tail"][1]
    args.img_size = args.img_size or metas["head"]["img_size"]
    args.norm = args.norm or metas["head"]["norm"]
    for part in PARTS:
        metas[part].update(img_size=args.img_size, norm=args.norm)
    return last, stage1, metas


def part_datasets(args, split: dict) -> tuple:
    """({part: training images}, {part: test images})."""
    kw = {"img_size": args.img_size, "norm": args.norm, "on_corrupt": args.on_corrupt}
    train_sets = {p: part_dataset(args.data_root, split, p, "train", hflip=args.hflip, **kw) for p in PARTS}
    test_sets = {p: part_dataset(args.data_root, split, p, "test", **kw) for p in PARTS}
    return train_sets, test_sets


def build_models(args, metas: dict, last: LastCheckpoint | None, stage1: dict | None, rt) -> dict:
    """{part: model} on the device: the resumed run's weights, or the stage-1 models'."""
    models = {}
    for part in PARTS:
        if last is not None:
            m = model_from_file({**metas[part], "model": last["models"][part]}, last.path)
        else:
            m = model_from_file(*stage1[part])
        models[part] = m.to(rt.device)
        if args.channels_last and rt.cuda:
            models[part] = models[part].to(memory_format=torch.channels_last)
    return models


def stage1_accuracy(args, models: dict, test_loaders: dict, metas: dict, out: str, rt) -> dict:
    """Each stage-1 model's test figures as it was trained, before --fresh-fc resets its classifier."""
    before = {}
    for part in PARTS:
        res = summarize(evaluate(models[part], test_loaders[part], rt, metas[part]["num_classes"],
                                 amp=args.amp, channels_last=args.channels_last))
        before[part] = {k: v for k, v in res.items() if k != "per_class_f1"}
        if args.fresh_fc:
            checkpoint.unwrap(models[part]).fc.reset_parameters()
    if rt.is_main:
        print("stage-1 test accuracy: " + ", ".join(f"{p} {100 * before[p]['oa']:.2f}%" for p in PARTS)
              + f"; run folder {out}")
    return before


def distill_epochs(args, models: dict, optimizers: dict, loaders: tuple, metas: dict, start: int, out: str,
                   log, state: dict, rt) -> bool:
    """Epochs start..--epochs, each a student part learning from its frozen teacher, with a metrics row and
    ckpt_last.pt (holding `state` too); False where --stop-after ended the run early (tests: a crash)."""
    train_loaders, test_loaders = loaders
    speed = {"amp": args.amp, "channels_last": args.channels_last}
    wrapped = {p: DDP(m, device_ids=[rt.local_rank] if rt.cuda else None) if rt.distributed else m
               for p, m in models.items()}
    students = {p: torch.compile(w) if args.compile else w for p, w in wrapped.items()}
    teachers = {p: torch.compile(m) if args.compile else m for p, m in models.items()}
    for epoch in tqdm(range(start, args.epochs), desc="distill epochs", disable=not rt.is_main, initial=start,
                      total=args.epochs):
        s, t = phase(epoch, args.interval)
        freeze(models[t])
        models[s].requires_grad_(True)
        lr = distill_lr(epoch, args.interval, args.lr, args.lr_drop_epochs, args.lr_gamma, args.lr_per_phase)
        for group in optimizers[s].param_groups:
            group["lr"] = lr
        set_epoch(train_loaders[s], epoch)
        loss_fn = DistillLoss(teachers[t], args.alpha, args.feature_loss)
        tic = time.perf_counter()
        tr = train_one_epoch(students[s], train_loaders[s], optimizers[s], rt, desc=f"epoch {epoch} {t}->{s}",
                             loss_fn=loss_fn, **speed)
        seconds = time.perf_counter() - tic
        terms = loss_fn.terms(lambda x: all_reduce_sum(x, rt))
        row = {"epoch": epoch, "student": s, "teacher": t, "lr": lr, "train_loss": tr["loss"], **{
            f"train_{k}": v for k, v in terms.items()}, "train_acc": tr["acc"],
            "img_per_s": len(train_loaders[s].dataset) / seconds}
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            res = summarize(evaluate(students[s], test_loaders[s], rt, metas[s]["num_classes"], **speed))
            row.update({f"test_{k}": v for k, v in res.items() if k != "per_class_f1"})
            if rt.is_main:
                tqdm.write(f"epoch {epoch} {t}->{s} lr {lr:.0e} loss {tr['loss']:.4f} (ce {terms['ce']:.4f} "
                           f"feat {terms['feat_mse']:.4f}) test acc {res['oa']:.4f} {row['img_per_s']:.0f} "
                           f"img/s")
        log.write(**row)
        save_last(out, rt.is_main, {"models": models, "optimizers": optimizers}, epoch=epoch, **state)
        if args.stop_after is not None and epoch + 1 >= args.stop_after:
            return False
    return True


def report(args, split: dict, models: dict, test_loaders: dict, metas: dict, before: dict, out: str,
           rt) -> None:
    """The distilled models (head_model.pt, tail_model.pt), a per-class report per part, summary.md and
    summary.json."""
    after = {}
    for part in PARTS:
        cm = evaluate(models[part], test_loaders[part], rt, metas[part]["num_classes"], amp=args.amp,
                      channels_last=args.channels_last)
        if rt.is_main:
            save_part_model(models[part], os.path.join(out, f"{part}_model.pt"), metas[part])
            res = write_report(cm, metas[part]["names"], os.path.join(out, part), None,
                               [split["train_counts"][c] for c in metas[part]["classes"]],
                               title=f"KMDN distilled {part} model on {split['dataset']} {part} test images")
            after[part] = {k: v for k, v in res.items()
                           if k not in ("per_class_f1", "confusion_matrix", "names")}
    if not rt.is_main:
        return
    text = summary_markdown(before, after, metas, split["dataset"])
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"before": before, "after": after, "head_init": args.head_init, "tail_init": args.tail_init,
                   "fresh_fc": args.fresh_fc, "alpha": args.alpha, "feature_loss": args.feature_loss}, f,
                  indent=1)
    print(text + f"distilled models: {os.path.join(out, 'head_model.pt')}, "
                 f"{os.path.join(out, 'tail_model.pt')}")


# ------------------------------------------------------------------------------------------------ main


@cli
def main(args):
    if args.interval < 1:
        raise UserError(f"--interval must be at least 1, got {args.interval}")
    split = load_data_split(args)
    args.output_dir = args.output_dir or os.path.join("runs", "kmdn", args.name, "distill")
    last, stage1, metas = starting_point(args, split)
    train_sets, test_sets = part_datasets(args, split)
    rt = setup(args.device)
    out = rundir.prepare(args, rt.is_main)
    train_loaders = {p: make_loader(s, args.batch_size, True, rt, args.workers, args.seed)
                     for p, s in train_sets.items()}
    test_loaders = {p: make_loader(s, eval_batch_size(args), False, rt, args.workers)
                    for p, s in test_sets.items()}

    models = build_models(args, metas, last, stage1, rt)
    optimizers = {p: torch.optim.Adam(m.parameters(), lr=args.lr, weight_decay=args.weight_decay)
                  for p, m in models.items()}
    log = rundir.MetricsLog(out, rt.is_main, args.report_to)
    if last is not None:
        before, start = last["before"], last.restore({"optimizers": optimizers}, log, rt.is_main)
    else:
        before, start = stage1_accuracy(args, models, test_loaders, metas, out, rt), 0

    state = {"before": before, "metas": metas, "args": vars(args)}  # ckpt_last.pt's own entries
    loaders = (train_loaders, test_loaders)
    if distill_epochs(args, models, optimizers, loaders, metas, start, out, log, state, rt):
        report(args, split, models, test_loaders, metas, before, out, rt)
    cleanup()


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "kmdn_distill"))
