"""What benchmarks/long_tail.py runs: each part's chains of runs (one subprocess each, through the
repository's own entry points), the tuning runs on the validation list and the choice read from them.

A chain's runs go one after another; a run's `needs` are markers of other chains' runs. The order of the
chains is the order in which free workers look at them (benchmarks/chain_runner.py).
"""
import json
import os
import shlex
import sys
from dataclasses import dataclass

import numpy as np

from benchmarks.chain_runner import REPO, Job
from common.jsonfile import read_json_if_present
from common.layout import read_classes

TRAINED = {"ce": [], "resample": ["--sampler", "class_balanced"], "cb": ["--loss", "cb"],
           "balanced_softmax": ["--loss", "balanced_softmax"], "ldam_drw": ["--loss", "ldam"]}
ON_CE = ("crt", "logit_adjust", "tau_norm")  # need the CE model of the same seed
# the classifier on the original + generated list, as is or with the re-sampling method's sampler
TGN_METHODS = {"tgn": [], "tgn_resample": TRAINED["resample"]}
METHODS = (*TRAINED, *ON_CE, *TGN_METHODS)
# cb: by flag
DEFAULT_METHODS = ("ce", "resample", "balanced_softmax", "ldam_drw", "crt", "logit_adjust", "tau_norm")
PARTS = ("longtail", "kmdn", "tgn", "dsva")
PROTOCOLS = ("adam", "sgd")
# LDAM-DRW's CIFAR recipe (SGD, momentum 0.9, lr 0.1 at batch 128) scaled linearly to batch 32; weight decay
# and cosine decay as in Kang et al.'s recipe
SGD_ARGS = "--optimizer sgd --lr 0.025 --momentum 0.9 --weight-decay 5e-4 --schedule cosine"
VAL_SEED = 0  # one validation list for every seed and protocol
# wall seconds of one run on one thread at the embedded set's scale (configs/synthetic.yaml, measured
# 2026-12-01); only for the ETA
COST = {"train": 130, "tgn": 210, "crt": 30, "posthoc": 11, "kmdn_head": 85, "kmdn_tail": 35, "distill": 92,
        "clip": 285, "clip_continued": 100, "annotate": 15, "dsva": 30, "cdtg": 280, "generate": 15,
        "expand": 1, "evaluate": 40}


def py(script: str, *args) -> list:
    return [sys.executable, os.path.join(REPO, script), *map(str, args)]


def protocol_flags(args, protocol: str) -> list:
    return shlex.split(args.sgd_args) if protocol == "sgd" else []


def lt_folder(args, protocol: str, method: str, seed: int) -> str:
    return os.path.join(args.output_dir, "longtail", protocol, method, f"seed{seed}")


def train_lists(args) -> list:
    """The training lists of the long-tail classifiers: the carved training part, or the data set's list."""
    return ["--train-list", args.lt_train_list] if args.lt_train_list else []


def config_epochs(args) -> int:
    from common.config import load_section
    return int(load_section(args.config, "classification").get("epochs", 50)) if args.config else 50


def drw_candidates(args) -> list:
    epochs = config_epochs(args)
    return sorted({min(epochs - 1, max(1, int(f * epochs))) for f in args.drw_fractions})


def drw_tuning_chain(args, root: str, protocol: str) -> list:
    """LDAM-DRW with each candidate DRW start, first seed, trained on the training part and tested on the
    validation list (never the test list)."""
    cfg = ["--config", args.config] if args.config else []
    jobs = []
    for k in drw_candidates(args):
        f = os.path.join(args.output_dir, "longtail", protocol, "tune", "ldam_drw", f"drw{k}")
        jobs.append(Job(f"tune ldam_drw drw {k} ({protocol})", py(
            "Classification/train.py", *cfg, "--data-root", root, "--seed", args.seeds[0], *train_lists(args),
            "--test-list", args.val_list, "--output-dir", f, *TRAINED["ldam_drw"],
            *protocol_flags(args, protocol), "--drw-epoch", k), f, os.path.join(f, "results.json"),
                        COST["train"]))
    return jobs


def mean_class_accuracy(results: dict) -> float:
    return float(np.mean([a for a in results["per_class_acc"] if a is not None]))


def chosen_drw(args, protocol: str) -> dict:
    """The DRW start whose candidate run has the best mean per-class accuracy on the validation list (the
    first of equal scores); written to <out>/longtail/<protocol>/tune/ldam_drw.json."""
    scores = {}
    for job in drw_tuning_chain(args, "", protocol):
        k = int(job.cmd[job.cmd.index("--drw-epoch") + 1])
        scores[k] = mean_class_accuracy(read_json_if_present(job.marker))
    best = max(scores, key=scores.get)
    doc = {"drw_epoch": best, "epochs": config_epochs(args), "val_mean_acc": scores,
           "val_list": args.val_list}
    path = os.path.join(args.output_dir, "longtail", protocol, "tune", "ldam_drw.json")
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(path + ".tmp", path)
    return doc


def longtail_chains(args, seed: int, root: str, protocol: str) -> list:
    cfg = ["--config", args.config] if args.config else []
    flags = protocol_flags(args, protocol)

    def train_job(method, extra, cost, cmd=None, needs=()):
        f = lt_folder(args, protocol, method, seed)
        base = py("Classification/train.py", *cfg, "--data-root", root, "--seed", seed, *train_lists(args),
                  "--output-dir", f, *extra, *flags)
        return Job(f"{method} seed {seed} ({protocol})", cmd or base, f, os.path.join(f, "results.json"),
                   cost, extra={"part": "longtail", "method": method, "seed": seed, "protocol": protocol},
                   needs=needs)

    chains = []
    ce_model = os.path.join(lt_folder(args, protocol, "ce", seed), "model_final.pt")
    ce_chain = [train_job("ce", [], COST["train"])] if {"ce", *ON_CE} & set(args.methods) else []
    tune = ["--tune-list", args.val_list] if args.val_list else []
    crt_tune = tune + ["--eval-every", 10 ** 6] if tune else []  # the test set only for the chosen epoch
    for method in args.methods:
        if method in ON_CE:
            f = lt_folder(args, protocol, method, seed)
            meta = {"part": "longtail", "method": method, "seed": seed, "protocol": protocol}
            if method == "crt":
                job = Job(f"crt seed {seed} ({protocol})", py(
                    "Classification/crt.py", *cfg, "--weights", ce_model, "--data-root", root, "--seed", seed,
                    *train_lists(args), *crt_tune, "--output-dir", f), f, os.path.join(f, "results.json"),
                    COST["crt"], extra=meta)
            else:
                flag = ["--logit-adjust", args.logit_adjust_tau] if method == "logit_adjust" else [
                    "--tau-norm", args.tau_norm]
                job = Job(f"{method} seed {seed} ({protocol})", py(
                    "Classification/test.py", *cfg, "--weights", ce_model, "--data-root", root,
                    "--output-dir", f, *flag, *tune), f, os.path.join(f, "results.json"), COST["posthoc"],
                    resumable=False, extra=meta)
            ce_chain.append(job)
        elif method == "ldam_drw" and args.val_list:
            tuning = drw_tuning_chain(args, root, protocol)
            job = train_job(method, TRAINED[method], COST["train"], needs=tuple(j.marker for j in tuning))
            fixed = list(job.cmd)
            job.cmd = lambda fixed=fixed: fixed + ["--drw-epoch",
                                                   str(chosen_drw(args, protocol)["drw_epoch"])]
            chains.append([job])
        elif method != "ce" and method not in TGN_METHODS:
            chains.append([train_job(method, TRAINED[method], COST["train"])])
    return ([ce_chain] if ce_chain else []) + chains


def kmdn_chain(args, seed: int, root: str, then: tuple = (), control: bool = True) -> list:
    """Head and tail models, distillation, the runs in `then` (which use the distilled tail model), then the
    alpha = 0 control (unless `control` is False)."""
    base = os.path.join(args.output_dir, "kmdn", f"seed{seed}")
    cfg = ["--config", args.config] if args.config else []
    jobs = []
    for part in ("head", "tail"):
        f = os.path.join(base, part)
        jobs.append(Job(f"kmdn {part} seed {seed}",
                        py("KMDN/train.py", "--part", part, *cfg, "--data-root", root,
                           "--seed", seed, "--output-dir", f), f,
                        os.path.join(f, "results.json"), COST[f"kmdn_{part}"]))
    for name, flags in (("distill", []), ("distill_alpha0", ["--alpha", 0])):
        f = os.path.join(base, name)
        jobs.append(Job(f"kmdn {name} seed {seed}", py(
            "KMDN/distill.py", *cfg, "--data-root", root, "--seed", seed, "--output-dir", f,
            "--head-init", os.path.join(base, "head", "model_final.pt"),
            "--tail-init", os.path.join(base, "tail", "model_final.pt"), *flags), f,
            os.path.join(f, "summary.json"), COST["distill"],
                        extra={"part": "kmdn", "method": name, "seed": seed}))
    jobs[3:3] = then
    return [jobs if control else jobs[:-1]]


def tail_model_path(args, seed: int) -> str:
    return os.path.join(args.output_dir, "kmdn", f"seed{seed}", "distill", "tail_model.pt")


@dataclass
class TGNPlan:
    clip: list  # a chain: the small CLIP of every class, for CDTG's text loss
    cdtg: list  # train, generate, expand: to run after the first seed's distillation
    evaluate: Job
    train_list: str


def tgn_plan(args, seed: int, root: str) -> TGNPlan:
    base = os.path.join(args.output_dir, "tgn")
    cfg = ["--config", args.config] if args.config else []
    clip = os.path.join(base, "clip", "clip_all.pt")
    # as the quickstart does: the DSVA CLIP of the same seed continued on every class, when the dsva part runs
    dsva_clip = os.path.join(args.output_dir, "dsva", f"seed{seed}", "clip.pt")
    start = ["--init", dsva_clip, "--steps", 150, "--warmup", 10] if "dsva" in args.parts else []
    clip_job = Job("clip (every class)",
                   py("data/synthetic/train_clip.py", *cfg, "--data-root", root, "--out", clip,
                      "--all-classes", "--seed", seed, *start), os.path.dirname(clip),
                   os.path.join(os.path.dirname(clip), "clip_all_report.json"),
                   COST["clip_continued" if start else "clip"], resumable=False,
                   needs=(os.path.join(os.path.dirname(dsva_clip), "clip_report.json"),) if start else ())
    # a real data set: the config's CLIP (e.g. OpenAI ViT-B/32)
    embedded = read_classes(root)["dataset"] == "SYNTH"
    train, gen = os.path.join(base, "cdtg_train"), os.path.join(base, "generated")
    train_list = os.path.join(base, "expanded_train.txt")
    ce = lt_folder(args, tgn_protocol(args), "ce", seed)
    ce_runs = "longtail" in args.parts and bool({"ce", *ON_CE} & set(args.methods))
    with_ce = ce_runs or os.path.isfile(os.path.join(ce, "results.json"))
    ce_done = (os.path.join(ce, "results.json"),) if with_ce else ()
    # quality tracked during training (quality.png) against the first seed's CE model
    track = ["--eval-every", 200, "--eval-classifier", os.path.join(ce, "model_final.pt")] if with_ce else []
    cdtg = [
        Job("cdtg train",
            py("CDTG/train.py", *cfg, "--data-root", root, "--tail-model", tail_model_path(args, seed),
               *(["--clip-pretrained", clip] if embedded else []), *track, "--seed", seed,
               "--output-dir", train), train, os.path.join(train, "generator.pt"), COST["cdtg"],
            needs=((clip_job.marker,) if embedded else ()) + ce_done),
        Job("cdtg generate", py("CDTG/generate.py", *cfg, "--weights", os.path.join(train, "generator.pt"),
                                "--seed", seed, "--output-dir", gen), gen, os.path.join(gen, "manifest.json"),
            COST["generate"], resumable=False, fresh=True),
        Job("cdtg expand", py("CDTG/expand.py", "--generated", gen, "--out", train_list, "--data-root", root,
                              "--overwrite"), base, train_list, COST["expand"], resumable=False),
    ]
    evaluate = Job("cdtg evaluate", py("CDTG/evaluate.py", *cfg, "--generated", gen, "--overwrite",
                                       *(["--classifier", os.path.join(ce, "model_final.pt")] if with_ce
                                         else [])),
                   gen, os.path.join(gen, "quality.json"), COST["evaluate"], resumable=False,
                   extra={"part": "cdtg", "method": "cdtg", "seed": seed},
                   needs=(train_list, *ce_done))
    return TGNPlan([clip_job] if embedded else [], cdtg, evaluate, train_list)


def tgn_protocol(args) -> str:
    """TGN is upstream's classifier: trained under the adam protocol when it runs."""
    return "adam" if "adam" in args.protocols else args.protocols[0]


def tgn_job(args, seed: int, root: str, train_list: str, produced: bool, method: str = "tgn") -> Job:
    protocol = tgn_protocol(args)
    f = lt_folder(args, protocol, method, seed)
    cfg = ["--config", args.config] if args.config else []
    orig = args.lt_train_list or os.path.join(root, "anno", f"{read_classes(root)['dataset']}_train.txt")
    cmd = py("Classification/train.py", *cfg, "--data-root", root, "--seed", seed, "--train-list", orig,
             "--train-list", train_list, "--output-dir", f, *TGN_METHODS[method],
             *protocol_flags(args, protocol))
    return Job(f"{method} seed {seed}", cmd, f,
               os.path.join(f, "results.json"), COST["tgn"],
               extra={"part": "longtail", "method": method, "seed": seed, "protocol": protocol},
               needs=(train_list,) if produced else ())


def dsva_chain(args, seed: int, root: str) -> list:
    base = os.path.join(args.output_dir, "dsva", f"seed{seed}")
    cfg = ["--config", args.config] if args.config else []
    clip = os.path.join(base, "clip.pt")
    ann = os.path.join(base, "annotate")
    final = os.path.join(base, "dsva")
    vals = [os.path.join(base, "dsva_val" + (f"_fold{k}" if k else "")) for k in range(args.dsva_val_folds)]
    common = [*cfg, "--data-root", root, "--split", args.dsva_split, "--clip-pretrained", clip,
              "--attributes", os.path.join(ann, "attributes.json"), "--seed", seed]
    return [[
        Job(f"clip seed {seed}", py("data/synthetic/train_clip.py", *cfg, "--data-root", root, "--out", clip,
                                    "--exclude-unseen", args.dsva_split, "--seed", seed), base,
            os.path.join(base, "clip_report.json"), COST["clip"], resumable=False),
        Job(f"annotate seed {seed}",
            py("DSVA/annotate.py", *cfg, "--data-root", root, "--clip-pretrained", clip,
               "--output-dir", ann, "--overwrite", "--seed", seed), ann,
            os.path.join(ann, "attributes.json"), COST["annotate"], resumable=False),
        *[Job(f"dsva val {k} seed {seed}", py("DSVA/train.py", *common, "--output-dir", val,
                                               *shlex.split(args.dsva_val_args), "--val-fold", k), val,
              os.path.join(val, "results.json"), COST["dsva"]) for k, val in enumerate(vals)],
        Job(f"dsva seed {seed}", py("DSVA/train.py", *common, "--output-dir", final, "--val-run", *vals),
            final, os.path.join(final, "results.json"), COST["dsva"],
            extra={"part": "dsva", "method": "dsva", "seed": seed}),
    ]]



def all_chains(args, root: str) -> list:
    """Every chain of the parts in args.parts, in the order free workers look at them."""
    # A run waits only for runs of chains before its own: the CLIP and the KMDN chain that lead to CDTG first,
    # then the runs that need CDTG's list (the Runner starts them as soon as the list exists), then the rest.
    first, chains, late = [], [], []
    s0 = args.seeds[0]
    plan = tgn_plan(args, s0, root) if "tgn" in args.parts and not args.tgn_list else None
    if plan:
        if "dsva" in args.parts:
            dsva0 = dsva_chain(args, s0, root)[0]
            first.append(dsva0[:1] + plan.clip + dsva0[1:])
        elif plan.clip:
            first.append(plan.clip)
        if "longtail" in args.parts:  # CDTG tracks its quality against this seed's CE model
            first += longtail_chains(args, s0, root, tgn_protocol(args))[:1]
        first += kmdn_chain(args, s0, root, then=plan.cdtg, control="kmdn" in args.parts)
        late.append([plan.evaluate])
    if "longtail" in args.parts and args.val_list and "ldam_drw" in args.methods:
        first += [drw_tuning_chain(args, root, protocol) for protocol in args.protocols]
    for seed in args.seeds:
        if "longtail" in args.parts:
            for protocol in args.protocols:
                skip = 1 if plan and seed == s0 and protocol == tgn_protocol(args) else 0
                chains += longtail_chains(args, seed, root, protocol)[skip:]
        if "kmdn" in args.parts and not (plan and seed == s0):
            chains += kmdn_chain(args, seed, root)
        if "dsva" in args.parts and not (plan and seed == s0):
            chains += dsva_chain(args, seed, root)
        for method in TGN_METHODS:
            if method in args.methods:
                late.append([tgn_job(args, seed, root, plan.train_list if plan else args.tgn_list, bool(plan),
                                     method)])
    return first + late + chains
