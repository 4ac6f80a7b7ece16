"""What each paper's method adds, over several seeds, under one protocol.

    python benchmarks/long_tail.py --config configs/synthetic.yaml --tgn-list runs/.../expanded_train.txt
    python benchmarks/long_tail.py --config configs/synthetic.yaml --methods ce ldam_drw --seeds 0 1 --parts longtail

Four parts, each run for every seed through the repository's own entry points (one subprocess per run, its log
beside its folder):
- longtail: Classification/train.py with each long-tail baseline, cRT (Classification/crt.py) and the post-hoc
  adjustments (Classification/test.py) on the CE model of the same seed, under each optimisation protocol
  (--protocols: upstream's Adam with a step schedule, the long-tail literature's SGD with momentum and cosine
  decay). Each method's free setting is chosen on a validation list carved from the training set
  (common/holdout.py; the methods train on the rest): LDAM-DRW's DRW start by candidate runs of the first seed,
  cRT's epochs, and the tau of logit adjustment and tau-normalisation per seed; the test list is read only for
  the final figures;
- kmdn: KMDN head and tail models, then distillation with alpha from the config and the control alpha = 0 from the
  same stage-1 models (everything else equal);
- tgn: CDTG trained once, on the distilled tail model of the first seed's KMDN (configs' cdtg_train section), its
  images generated and added to the training list (CDTG/generate.py, CDTG/expand.py) and their quality measured
  (CDTG/evaluate.py against the first seed's CE model); then a TGN classifier on that list for every seed (method
  tgn), and one on the same list with class-balanced re-sampling (method tgn_resample: the generated images on
  top of re-sampling). --tgn-list LIST uses an expanded list made elsewhere instead;
- dsva: the small CLIP fitted with the seed (data/synthetic/train_clip.py --seed), attributes annotated by it, a
  validation run, the final run; next to plain CLIP zero-shot of the same CLIP.

Writes <out>/results.md (mean ± std over seeds, and each method's per-seed paired difference against CE),
<out>/runs.csv (one row per run) and <out>/long_tail_groups.png. A run counts as finished when its results file
exists; finished runs are never redone, so the command resumes after an interruption.
"""
import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from common.config import add_config_arg, parse_args
from common.errors import UserError, cli
from common.layout import anno_path, read_classes
from common.options import add_output_arg
from common.split import optional_split

from common.holdout import carve_lists
from common.jsonfile import read_json_if_present
from common.layout import read_list

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINED = {"ce": [], "resample": ["--sampler", "class_balanced"], "cb": ["--loss", "cb"],
           "balanced_softmax": ["--loss", "balanced_softmax"], "ldam_drw": ["--loss", "ldam"]}
ON_CE = ("crt", "logit_adjust", "tau_norm")  # need the CE model of the same seed
# the classifier on the original + generated list, as is or with the re-sampling method's sampler
TGN_METHODS = {"tgn": [], "tgn_resample": TRAINED["resample"]}
METHODS = (*TRAINED, *ON_CE, *TGN_METHODS)
DEFAULT_METHODS = ("ce", "resample", "balanced_softmax", "ldam_drw", "crt", "logit_adjust", "tau_norm")  # cb: by flag
PARTS = ("longtail", "kmdn", "tgn", "dsva")
PROTOCOLS = ("adam", "sgd")
# LDAM-DRW's CIFAR recipe (SGD, momentum 0.9, lr 0.1 at batch 128) scaled linearly to batch 32; weight decay
# and cosine decay as in Kang et al.'s recipe
SGD_ARGS = "--optimizer sgd --lr 0.025 --momentum 0.9 --weight-decay 5e-4 --schedule cosine"
VAL_SEED = 0  # one validation list for every seed and protocol
# wall seconds of one run on one thread at the embedded set's scale (configs/synthetic.yaml, measured 2026-12-01);
# only for the ETA
COST = {"train": 130, "tgn": 210, "crt": 30, "posthoc": 11, "kmdn_head": 85, "kmdn_tail": 35, "distill": 92,
        "clip": 285, "clip_continued": 100, "annotate": 15, "dsva": 30, "cdtg": 280, "generate": 15, "expand": 1,
        "evaluate": 40}
LT_COLUMNS = (("oa", "OA"), ("macro_f1", "macro-F1"), ("head_acc", "head"), ("tail_acc", "tail"),
              ("many_acc", "many"), ("medium_acc", "medium"), ("few_acc", "few"))


def get_args_parser():
    p = argparse.ArgumentParser("Long-tail, KMDN and DSVA benchmark over seeds")
    add_config_arg(p)
    p.add_argument("--data-root", default=None, help="processed data root (default: the config's classification "
                                                     "section's data_root)")
    p.add_argument("--methods", nargs="+", default=None, choices=list(METHODS),
                   help=f"long-tail methods (default: {' '.join(DEFAULT_METHODS)}, plus tgn and tgn_resample "
                        f"with the tgn part or --tgn-list; a list given here gets tgn added with the tgn "
                        f"part)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    p.add_argument("--tgn-list", default=None, help="an expanded training list made elsewhere (CDTG/expand.py) for "
                                                    "TGN, instead of the tgn part's CDTG run")
    p.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS),
                   help="adam: the config's recipe (upstream's Adam, step schedule); sgd: --sgd-args on top of "
                        "it")
    p.add_argument("--sgd-args", default=SGD_ARGS, help="Classification/train.py flags of the sgd protocol")
    p.add_argument("--tune-list", default="carve",
                   help="'carve' (default): a validation list carved from the training list (--val-fraction "
                        "of each class, at least 1 and at most --val-max images, one kept for training), the "
                        "methods train on the rest; a FILE (its paths relative to <root>/train): that list is "
                        "held out; 'none': no validation, fixed reference values (--logit-adjust-tau, --tau-norm, "
                        "DRW at 80 %%, cRT's last epoch)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--val-max", type=int, default=20, help="most validation images of one class")
    p.add_argument("--drw-fractions", type=float, nargs="+", default=[0.25, 0.5, 0.8],
                   help="LDAM-DRW's candidate DRW starts as fractions of the epochs (the reference: 0.8)")
    p.add_argument("--logit-adjust-tau", type=float, default=1.0,
                   help="without validation: Menon et al.'s post-hoc default")
    p.add_argument("--tau-norm", type=float, default=1.0, help="without validation: tau of tau-normalisation")
    p.add_argument("--dsva-split", default="43", help="zero-shot split; the CLIP is fitted without its unseen classes")
    p.add_argument("--dsva-val-args", default="--ways 5 --val-classes 2",
                   help="extra flags of the DSVA validation runs (pick epochs and gamma for the final run)")
    p.add_argument("--dsva-val-folds", type=int, default=1,
                   help="DSVA validation runs per seed, each holding out other seen classes (--val-fold 0..K-1); "
                        "the final run takes the epochs and gamma of their mean validation figures")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (independent chains of runs)")
    p.add_argument("--threads", type=int, default=0, help="OMP threads per run (0: CPU cores // --jobs)")
    add_output_arg(p, default="runs/benchmark/default", help="benchmark folder")
    p.add_argument("--report-only", action="store_true", help="write the report from finished runs, run nothing")
    p.set_defaults(lt_train_list=None, val_list=None)  # set by main() from --tune-list
    return p


@dataclass
class Job:
    label: str
    cmd: list  # or a function returning it, called when the run starts (after the runs it needs)
    folder: str
    marker: str  # the file that says the run finished
    cost: float
    resumable: bool = True  # a run-folder script (--resume / --overwrite)
    extra: dict = field(default_factory=dict)
    needs: tuple = ()  # markers of other chains' runs that must exist first
    fresh: bool = False  # a script that refuses an existing output folder: a partial one is removed first

    @property
    def done(self) -> bool:
        return os.path.isfile(self.marker)


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
            *protocol_flags(args, protocol), "--drw-epoch", k), f, os.path.join(f, "results.json"), COST["train"]))
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
            job.cmd = lambda fixed=fixed: fixed + ["--drw-epoch", str(chosen_drw(args, protocol)["drw_epoch"])]
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
        jobs.append(Job(f"kmdn {part} seed {seed}", py("KMDN/train.py", "--part", part, *cfg, "--data-root", root,
                                                       "--seed", seed, "--output-dir", f), f,
                        os.path.join(f, "results.json"), COST[f"kmdn_{part}"]))
    for name, flags in (("distill", []), ("distill_alpha0", ["--alpha", 0])):
        f = os.path.join(base, name)
        jobs.append(Job(f"kmdn {name} seed {seed}", py(
            "KMDN/distill.py", *cfg, "--data-root", root, "--seed", seed, "--output-dir", f,
            "--head-init", os.path.join(base, "head", "model_final.pt"),
            "--tail-init", os.path.join(base, "tail", "model_final.pt"), *flags), f,
            os.path.join(f, "summary.json"), COST["distill"], extra={"part": "kmdn", "method": name, "seed": seed}))
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
    clip_job = Job("clip (every class)", py("data/synthetic/train_clip.py", *cfg, "--data-root", root, "--out", clip,
                                            "--all-classes", "--seed", seed, *start), os.path.dirname(clip),
                   os.path.join(os.path.dirname(clip), "clip_all_report.json"),
                   COST["clip_continued" if start else "clip"], resumable=False,
                   needs=(os.path.join(os.path.dirname(dsva_clip), "clip_report.json"),) if start else ())
    embedded = read_classes(root)["dataset"] == "SYNTH"  # a real data set: the config's CLIP (e.g. OpenAI ViT-B/32)
    train, gen = os.path.join(base, "cdtg_train"), os.path.join(base, "generated")
    train_list = os.path.join(base, "expanded_train.txt")
    ce = lt_folder(args, tgn_protocol(args), "ce", seed)
    ce_runs = "longtail" in args.parts and bool({"ce", *ON_CE} & set(args.methods))
    with_ce = ce_runs or os.path.isfile(os.path.join(ce, "results.json"))
    ce_done = (os.path.join(ce, "results.json"),) if with_ce else ()
    # quality tracked during training (quality.png) against the first seed's CE model
    track = ["--eval-every", 200, "--eval-classifier", os.path.join(ce, "model_final.pt")] if with_ce else []
    cdtg = [
        Job("cdtg train", py("CDTG/train.py", *cfg, "--data-root", root, "--tail-model", tail_model_path(args, seed),
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
                                       *(["--classifier", os.path.join(ce, "model_final.pt")] if with_ce else [])),
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
    common = [*cfg, "--data-root", root, "--split", args.dsva_split, "--clip-pretrained", clip, "--attributes",
              os.path.join(ann, "attributes.json"), "--seed", seed]
    return [[
        Job(f"clip seed {seed}", py("data/synthetic/train_clip.py", *cfg, "--data-root", root, "--out", clip,
                                    "--exclude-unseen", args.dsva_split, "--seed", seed), base,
            os.path.join(base, "clip_report.json"), COST["clip"], resumable=False),
        Job(f"annotate seed {seed}", py("DSVA/annotate.py", *cfg, "--data-root", root, "--clip-pretrained", clip,
                                        "--output-dir", ann, "--overwrite", "--seed", seed), ann,
            os.path.join(ann, "attributes.json"), COST["annotate"], resumable=False),
        *[Job(f"dsva val {k} seed {seed}", py("DSVA/train.py", *common, "--output-dir", val,
                                               *shlex.split(args.dsva_val_args), "--val-fold", k), val,
              os.path.join(val, "results.json"), COST["dsva"]) for k, val in enumerate(vals)],
        Job(f"dsva seed {seed}", py("DSVA/train.py", *common, "--output-dir", final, "--val-run", *vals), final,
            os.path.join(final, "results.json"), COST["dsva"], extra={"part": "dsva", "method": "dsva", "seed": seed}),
    ]]


# ------------------------------------------------------------------------------------------------- running

class Runner:
    def __init__(self, chains: list, jobs: int, threads: int):
        self.chains, self.jobs = chains, max(1, jobs)
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads or max(1, (os.cpu_count() or 2) // self.jobs)),
                    "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.lock = threading.Condition()
        self.failed = []
        self.given_up = set()  # markers of runs that failed or were skipped: runs that need them cannot start
        total = sum(j.cost for c in chains for j in c)
        done = sum(j.cost for c in chains for j in c if j.done)  # counted from the start: the ETA is the rest's
        self.bar = tqdm(total=total, initial=done, unit="s", desc="benchmark (estimated CPU seconds)",
                        dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}]")

    def wait_for(self, job: Job) -> str | None:
        """Block until every run that `job` needs has finished; the label of a need that never will, else None."""
        with self.lock:
            while True:
                missing = [m for m in job.needs if not os.path.isfile(m)]
                lost = [m for m in missing if m in self.given_up]
                if lost or not missing:
                    return lost[0] if lost else None
                self.lock.wait(timeout=5)

    def run_job(self, job: Job) -> bool:
        if job.done:
            return True
        lost = self.wait_for(job)
        if lost:
            with self.lock:
                self.failed.append((job.label, f"not run: {lost} was not made"))
                tqdm.write(f"skipped: {job.label} (needs {lost}, whose run failed)")
            return False
        if job.fresh and os.path.isdir(job.folder):
            shutil.rmtree(job.folder)  # a partial output of an interrupted run; the benchmark owns this folder
        try:
            cmd = [str(c) for c in (job.cmd() if callable(job.cmd) else job.cmd)]
        except Exception as e:  # e.g. a tuning result that cannot be read: this run fails, the others go on
            with self.lock:
                self.failed.append((job.label, f"its command could not be made: {e}"))
                tqdm.write(f"failed: {job.label} ({e})")
            return False
        if job.resumable:
            cmd.append("--resume" if os.path.isfile(os.path.join(job.folder, "ckpt_last.pt")) else "--overwrite")
        os.makedirs(os.path.dirname(os.path.abspath(job.folder)), exist_ok=True)
        log = job.folder.rstrip("/") + ".log"
        with open(log, "w") as f:
            f.write(" ".join(shlex.quote(str(c)) for c in cmd) + "\n")
            f.flush()
            rc = subprocess.run(cmd, cwd=REPO, env=self.env, stdout=f, stderr=subprocess.STDOUT).returncode
        if rc != 0 or not job.done:
            with self.lock:
                self.failed.append((job.label, log))
                tqdm.write(f"failed: {job.label} (exit {rc}; log {log})")
            return False
        return True

    def run_chain(self, chain: list) -> None:
        for i, job in enumerate(chain):
            finished_before = job.done
            ok = self.run_job(job)
            with self.lock:
                self.bar.update(0 if finished_before else job.cost)
                self.bar.set_postfix_str(job.label)
                self.lock.notify_all()
            if not ok:
                with self.lock:
                    self.bar.update(sum(j.cost for j in chain[i + 1:]))
                    self.given_up.update(j.marker for j in chain[i:])
                    self.lock.notify_all()
                return

    def ready(self, chain: list) -> bool:
        """Whether the first unfinished run of `chain` can start now (or be skipped: a need was given up)."""
        job = next((j for j in chain if not j.done), None)
        return job is None or all(os.path.isfile(m) or m in self.given_up for m in job.needs)

    def next_chain(self) -> list | None:
        """The first waiting chain that can start, else (when nothing runs that could unblock one) the first;
        None when none is left."""
        with self.lock:
            while self.waiting:
                chain = next((c for c in self.waiting if self.ready(c)), None)
                if chain is None and not self.running:
                    chain = self.waiting[0]
                if chain is not None:
                    self.waiting.remove(chain)
                    self.running += 1
                    return chain
                self.lock.wait(timeout=5)
            return None

    def worker(self) -> None:
        while (chain := self.next_chain()) is not None:
            try:
                self.run_chain(chain)
            finally:
                with self.lock:
                    self.running -= 1
                    self.lock.notify_all()

    def run(self) -> None:
        """Runs `--jobs` chains at a time. A free worker takes the first chain (in the given order) whose next
        run can start, so runs that waited for another chain's output go before the chains listed after them."""
        done = [j for c in self.chains for j in c if j.done]
        if done:
            tqdm.write(f"{len(done)} finished runs found; not redone")
        self.waiting, self.running = list(self.chains), 0
        threads = [threading.Thread(target=self.worker) for _ in range(self.jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.bar.close()


# ------------------------------------------------------------------------------------------------ reporting

def count_groups(train_counts: list) -> dict:
    """{'many': [class ids], ...} by train images (> 100, 20-100, < 20); groups with no class are left out."""
    rules = {"many": lambda n: n > 100, "medium": lambda n: 20 <= n <= 100, "few": lambda n: n < 20}
    groups = {name: [c for c, n in enumerate(train_counts) if rule(n)] for name, rule in rules.items()}
    return {name: ids for name, ids in groups.items() if ids}


def longtail_metrics(res: dict, groups: dict) -> dict:
    out = {k: res.get(k) for k in ("oa", "macro_f1", "head_acc", "tail_acc")}
    acc = res["per_class_acc"]
    for name, ids in groups.items():
        vals = [acc[c] for c in ids if acc[c] is not None]
        out[f"{name}_acc"] = float(np.mean(vals)) if vals else None
    return out


def mean_std(values: list) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    v = 100 * np.asarray(v, dtype=float)
    return f"{v.mean():.1f}" if len(v) == 1 else f"{v.mean():.1f} ± {v.std(ddof=1):.1f}"


def signed_mean_std(values: list) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    v = 100 * np.asarray(v, dtype=float)
    m = round(float(v.mean()), 1) + 0.0  # no "-0.0"
    return f"{m:+.1f}" if len(v) == 1 else f"{m:+.1f} ± {v.std(ddof=1):.1f}"


def longtail_section(rows: list, methods: list, columns: list, groups: dict, train_counts: list,
                     protocol: str = "") -> list:
    by = {(r["method"], r["seed"]): r for r in rows}
    head = "| method | seeds | " + " | ".join(label for _, label in columns) + " |"
    sep = "|---|---|" + "---|" * len(columns)
    sizes = ", ".join(f"{g} {len(ids)} classes" for g, ids in groups.items())
    title = f", protocol {protocol}" if protocol else ""
    lines = [f"## Long-tail classification{title} (test set; mean ± std over seeds, %)", "",
             f"Groups by train images: many > 100, medium 20-100, few < 20 ({sizes}); head/tail from split.json. "
             f"Train counts: {min(train_counts)}-{max(train_counts)}.", "", head, sep]
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        if rs:
            lines.append(f"| {m} | {len(rs)} | " + " | ".join(mean_std([r.get(k) for r in rs]) for k, _ in columns)
                         + " |")
    lines += ["", "Paired difference against CE (same seed; mean ± std over seeds, points):", "", head, sep]
    for m in methods:
        if m == "ce":
            continue
        seeds = [s for (mm, s) in by if mm == m and ("ce", s) in by]
        if seeds:
            lines.append(f"| {m} − ce | {len(seeds)} | " + " | ".join(signed_mean_std(
                [None if by[(m, s)].get(k) is None or by[("ce", s)].get(k) is None
                 else by[(m, s)][k] - by[("ce", s)][k] for s in seeds]) for k, _ in columns) + " |")
    return lines


def protocols_section(rows: list, methods: list, protocols: list) -> list:
    """OA, head and tail of every method under each protocol, side by side."""
    keys = (("oa", "OA"), ("head_acc", "head"), ("tail_acc", "tail"))
    lines = ["", "## The protocols side by side (test set; mean ± std over seeds, %)", "",
             "| method | " + " | ".join(f"{p} {label}" for p in protocols for _, label in keys) + " |",
             "|---|" + "---|" * (len(protocols) * len(keys))]
    for m in methods:
        cells = [mean_std([r.get(k) for r in rows if r["method"] == m and r["protocol"] == p])
                 for p in protocols for k, _ in keys]
        if any(c != "-" for c in cells):
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def settings_section(args, rows: list, protocols: list) -> list:
    """Each method's free setting, what it got and where it came from."""
    val = args.val_list
    where = f"chosen on the validation list {val}" if val else "fixed (no validation list)"
    lines = ["", "## Settings of each method (the free ones chosen without the test set)", "",
             "| protocol | method | setting | source |", "|---|---|---|---|"]
    for p in protocols:
        if not any(r["protocol"] == p for r in rows):
            continue
        recipe = " ".join(protocol_flags(args, p)) or "the config (Adam, step schedule)"
        lines.append(f"| {p} | all | {recipe} | protocol |")
        rs = {(r["method"], r["seed"]): r for r in rows if r["protocol"] == p}
        seeds = sorted({s for _, s in rs})
        present = {m for m, _ in rs}  # methods with a finished run under this protocol
        if "ldam_drw" in present:
            tuned = os.path.join(args.output_dir, "longtail", p, "tune", "ldam_drw.json")
            doc = read_json_if_present(tuned) if val else None
            if doc:
                sc = ", ".join(f"{k}: {100 * v:.1f}" for k, v in doc["val_mean_acc"].items())
                lines.append(f"| {p} | ldam_drw | DRW from epoch {doc['drw_epoch']} of {doc['epochs']}; "
                             f"margin 0.5, s 30 | DRW start {where} (seed {args.seeds[0]}; mean per-class "
                             f"accuracy by DRW start {sc}); margin and s: reference defaults |")
            else:
                lines.append(f"| {p} | ldam_drw | DRW from 80 % of the epochs; margin 0.5, s 30 | reference "
                             f"defaults |")
        for m, key, fixed in (("crt", "epochs", None),
                              ("logit_adjust", "logit_adjust", args.logit_adjust_tau),
                              ("tau_norm", "tau_norm", args.tau_norm)):
            if m not in present:
                continue
            got = []
            for s_ in seeds:
                r = rs.get((m, s_))
                doc = read_json_if_present(os.path.join(r["folder"], "tuned.json")) if r else None
                got.append(f"{doc[key]:g}" if doc else "-")
            name = "epochs" if m == "crt" else "tau"
            if val:
                lines.append(f"| {p} | {m} | {name} per seed {', '.join(got)} | {where} |")
            else:
                lines.append(f"| {p} | {m} | {name} {'all (10)' if fixed is None else f'{fixed:g}'} | "
                             f"reference default |")
    return lines


def kmdn_section(rows: list) -> list:
    with_d = {r["seed"]: r for r in rows if r["method"] == "distill"}
    without = {r["seed"]: r for r in rows if r["method"] == "distill_alpha0"}
    lines = ["", "## KMDN: distillation against its alpha = 0 control (same stage-1 models and schedule; %)", "",
             "| model, own classes' test images | seeds | stage 1 | alpha = 0 (no distillation) | distilled | "
             "distilled − alpha 0 |", "|---|---|---|---|---|---|"]
    seeds = sorted(set(with_d) & set(without))
    if not seeds:
        return []
    for part in ("tail", "head"):
        for metric, name in (("oa", "accuracy"), ("macro_f1", "macro-F1")):
            k = f"{part}_{metric}"
            lines.append(f"| {part} model {name} | {len(seeds)} | "
                         f"{mean_std([with_d[s].get('before_' + k) for s in seeds])} | "
                         f"{mean_std([without[s].get(k) for s in seeds])} | "
                         f"{mean_std([with_d[s].get(k) for s in seeds])} | "
                         f"{signed_mean_std([with_d[s][k] - without[s][k] for s in seeds])} |")
    return lines


def cdtg_section(rows: list) -> list:
    if not rows:
        return []
    q = rows[0]
    pct = lambda key: "-" if q.get(key) is None else f"{100 * q[key]:.1f}"  # noqa: E731
    num = lambda key: "-" if q.get(key) is None else f"{q[key]:.2f}"  # noqa: E731
    return ["", f"## CDTG: the generated tail images behind TGN (one generator, from seed {q['seed']}'s distilled "
                f"tail model; mean over tail classes)", "",
            "| share assigned to their class by | generated | real tail images |", "|---|---|---|",
            f"| the distilled tail model | {pct('tail_model_consistency')} | {pct('real_tail_model_consistency')} |",
            f"| the independent CE classifier | {pct('classifier_consistency')} | "
            f"{pct('real_classifier_consistency')} |",
            f"| CLIP (tail-class prompts) | {pct('clip_consistency')} | {pct('real_clip_consistency')} |", "",
            f"Feature diversity (CE classifier's features) {num('feature_diversity')} against "
            f"{num('real_feature_diversity')} for real images; FID_cls {num('fid')} (per class), pooled "
            f"{num('pooled_fid')}. Details: {os.path.join(q['folder'], 'quality.md')}; the curves during training: "
            f"{os.path.join(os.path.dirname(q['folder']), 'cdtg_train', 'quality.png')}."]


def dsva_section(rows: list, split: str) -> list:
    if not rows:
        return []
    lines = ["", f"## DSVA: zero-shot on split {split} over seeds (CLIP fit and DSVA run; mean ± std, %)", "",
             "| method | seeds | ZSL acc | GZSL U | GZSL S | GZSL H |", "|---|---|---|---|---|---|"]
    for prefix, label in (("last", "DSVA, last epoch (epochs and gamma chosen on validation classes)"),
                          ("best_test", "DSVA, best epoch on test (upstream's selection)"),
                          ("clip", "plain CLIP zero-shot, same CLIPs (no calibration)")):
        lines.append(f"| {label} | {len(rows)} | " + " | ".join(
            mean_std([r.get(f"{prefix}_{k}") for r in rows]) for k in ("zsl", "u", "s", "h")) + " |")
    if all("epochs" in r for r in rows):
        lines += ["", "Per seed, DSVA's last epoch (epochs and gamma chosen on validation classes):", "",
                  "| seed | epochs | gamma | ZSL acc | GZSL U | GZSL S | GZSL H |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['seed']} | {r['epochs']} | {r['gamma']:g} | " + " | ".join(
            f"{100 * r[f'last_{k}']:.1f}" for k in ("zsl", "u", "s", "h")) + " |"
            for r in sorted(rows, key=lambda r: r["seed"])]
    return lines


def collect(chains: list, groups: dict) -> list:
    rows = []
    for job in (j for c in chains for j in c if j.extra and j.done):
        row = {**job.extra, "folder": job.folder}
        if job.extra["part"] == "longtail":
            row.update(longtail_metrics(read_json_if_present(job.marker), groups))
        elif job.extra["part"] == "cdtg":
            row.update(read_json_if_present(job.marker)["overall"])
        elif job.extra["part"] == "kmdn":
            s = read_json_if_present(job.marker)
            for part in ("head", "tail"):
                for k in ("oa", "macro_f1"):
                    row[f"{part}_{k}"] = s["after"][part][k]
                    row[f"before_{part}_{k}"] = s["before"][part][k]
        else:
            r = read_json_if_present(job.marker)
            for key in ("last", "best_test"):
                if r.get(key):
                    row.update({f"{key}_{k}": r[key][k] for k in ("zsl", "u", "s", "h")})
            if r.get("last") and "epoch" in r["last"]:
                row.update(epochs=r["last"]["epoch"] + 1, gamma=r["last"].get("gamma"))
            report = read_json_if_present(os.path.join(os.path.dirname(job.folder), "clip_report.json"))
            if report:
                z = report["zero_shot"]["name"]
                u, s = z["unseen_among_all"], z["seen_among_all"]
                row.update(clip_zsl=z["unseen_among_unseen"], clip_u=u, clip_s=s,
                           clip_h=2 * u * s / (u + s) if u and s and u + s else 0.0)
        rows.append(row)
    return rows


def write_csv(rows: list, path: str) -> None:
    first = ["part", "protocol", "method", "seed"]
    keys = first + sorted({k for r in rows for k in r} - {*first, "folder"}) + ["folder"]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})
    os.replace(tmp, path)


def groups_png(rows: list, methods: list, columns: list, path: str) -> None:
    from common.plots import plt
    cols = [(k, label) for k, label in columns if k.endswith("_acc")]
    present = [m for m in methods if any(r["method"] == m for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cols) * max(1, len(present)) / 3 + 3), 4))
    width = 0.8 / max(1, len(present))
    for i, m in enumerate(present):
        vals = [[r[k] for r in rows if r["method"] == m and r.get(k) is not None] for k, _ in cols]
        means = [100 * np.mean(v) if v else np.nan for v in vals]
        stds = [100 * np.std(v, ddof=1) if len(v) > 1 else 0 for v in vals]
        ax.bar(np.arange(len(cols)) + (i - (len(present) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label=m)
    ax.set_xticks(range(len(cols)), [label for _, label in cols])
    ax.set_ylabel("mean per-class test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Per-group accuracy, mean ± std over seeds")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(args, chains: list, split: dict) -> str:
    train_counts = split["train_counts"]
    groups = count_groups(train_counts)
    rows = collect(chains, groups)
    columns = [(k, label) for k, label in LT_COLUMNS
               if not k.endswith(("many_acc", "medium_acc", "few_acc")) or k.split("_")[0] in groups]
    lt = [r for r in rows if r["part"] == "longtail"]
    lines = [f"# Benchmark on {split['dataset']} (seeds {' '.join(map(str, args.seeds))})", ""]
    if args.val_list:
        n_val, n_train = len(read_list(args.val_list)), len(read_list(args.lt_train_list))
        lines += [f"Validation: {n_val} training images held out ({args.val_fraction:g} of each class, at "
                  f"least 1, at most {args.val_max}, one kept for training; {args.val_list}); the classifiers "
                  f"train on the other {n_train}.", ""]
    for i, protocol in enumerate(args.protocols):
        rs = [r for r in lt if r["protocol"] == protocol]
        if rs:
            lines += ([""] if i else []) + longtail_section(rs, args.methods, columns, groups, train_counts,
                                                            protocol)
            png = "long_tail_groups.png" if i == 0 else f"long_tail_groups_{protocol}.png"
            groups_png(rs, args.methods, columns, os.path.join(args.output_dir, png))
    if lt:
        if len(args.protocols) > 1:
            lines += protocols_section(lt, args.methods, args.protocols)
        lines += settings_section(args, lt, args.protocols)
    lines += cdtg_section([r for r in rows if r["part"] == "cdtg"])
    lines += kmdn_section([r for r in rows if r["part"] == "kmdn"])
    lines += dsva_section([r for r in rows if r["part"] == "dsva"], args.dsva_split)
    lines += ["", f"One row per run, with its folder (args.yaml inside): {os.path.join(args.output_dir, 'runs.csv')}."]
    text = "\n".join(lines) + "\n"
    write_csv(rows, os.path.join(args.output_dir, "runs.csv"))
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(text)
    return text


@cli
def main(args):
    root = args.data_root
    if args.config and not root:
        from common.config import load_section
        root = load_section(args.config, "classification").get("data_root")
    if not root:
        raise UserError("--data-root is required (or set data_root in the config's classification section)")
    read_classes(root)
    split = optional_split(None, root)
    if split is None:
        raise UserError(f"{root}/split.json is missing; run data/split.py --root {root} first")
    if args.methods is None:
        with_tgn = "tgn" in args.parts or args.tgn_list
        args.methods = list(DEFAULT_METHODS) + (list(TGN_METHODS) if with_tgn else [])
    if "tgn" in args.parts and "tgn" not in args.methods:
        args.methods = [*args.methods, "tgn"]
    for key, valid in (("methods", METHODS), ("parts", PARTS)):  # a config's lists skip argparse's choices
        bad = [v for v in getattr(args, key) if v not in valid]
        if bad:
            raise UserError(f"unknown {key[:-1]} {', '.join(map(str, bad))}; choose from {', '.join(valid)}")
    if "dsva" in args.parts and read_classes(root)["dataset"] != "SYNTH":
        raise UserError("the dsva part fits the embedded set's small CLIP per seed; for RSSDIVCS run "
                        "scripts/10_dsva.sh EXPERIMENT --seed N, or drop dsva from --parts")
    for method in TGN_METHODS:
        if method in args.methods and "tgn" not in args.parts and not args.tgn_list:
            raise UserError(f"method {method} needs the tgn part (--parts ... tgn) or --tgn-list "
                            f"(CDTG/expand.py's list)")
    if args.tgn_list and not os.path.isfile(args.tgn_list):
        raise UserError(f"--tgn-list {args.tgn_list} does not exist; run CDTG/expand.py first")
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    bad = [v for v in args.protocols if v not in PROTOCOLS]
    if bad:
        raise UserError(f"unknown protocol {', '.join(bad)}; choose from {', '.join(PROTOCOLS)}")
    if not 0 < args.val_fraction < 1:
        raise UserError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    held_out = None
    if args.tune_list not in ("carve", "none"):
        held_out = args.tune_list
        read_list(held_out)  # a missing or malformed list: one line, before anything is written
    os.makedirs(args.output_dir, exist_ok=True)
    args.lt_train_list = args.val_list = None
    if args.tune_list != "none" and "longtail" in args.parts:
        args.lt_train_list, args.val_list = carve_lists(
            anno_path(root, "train"), os.path.join(root, "train"), os.path.join(args.output_dir, "lists"),
            held_out, args.val_fraction, args.val_max, VAL_SEED)
    # A run waits only for runs of chains before its own: the CLIP and the KMDN chain that lead to CDTG first, then
    # the runs that need CDTG's list (the Runner starts them as soon as the list exists), then the rest.
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
    chains = first + late + chains
    failed = []
    if not args.report_only:
        runner = Runner(chains, args.jobs, args.threads)
        runner.run()
        failed = runner.failed
    print(write_report(args, chains, split))
    print(f"report: {os.path.join(args.output_dir, 'results.md')}")
    if failed:
        print(f"{len(failed)} run(s) failed: " + "; ".join(f"{label} (log {log})" for label, log in failed),
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(parse_args(get_args_parser(), "benchmark"))
