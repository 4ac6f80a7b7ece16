"""What each paper's method adds, over several seeds, under one protocol.

    python benchmarks/long_tail.py --config configs/synthetic.yaml --tgn-list runs/.../expanded_train.txt
    python benchmarks/long_tail.py --config configs/synthetic.yaml --methods ce ldam_drw --seeds 0 1 \
        --parts longtail

Four parts, each run for every seed through the repository's own entry points (one subprocess per run, its log
beside its folder):
- longtail: Classification/train.py with each long-tail baseline, cRT (Classification/crt.py) and the post-hoc
  adjustments (Classification/test.py) on the CE model of the same seed, under each optimisation protocol
  (--protocols: upstream's Adam with a step schedule, the long-tail literature's SGD with momentum and cosine
  decay). Each method's free setting is chosen on a validation list carved from the training set
  (common/holdout.py; the methods train on the rest): LDAM-DRW's DRW start by candidate runs of the first
  seed, cRT's epochs, and the tau of logit adjustment and tau-normalisation per seed; the test list is read
  only for the final figures;
- kmdn: KMDN head and tail models, then distillation with alpha from the config and the control alpha = 0 from
  the same stage-1 models (everything else equal);
- tgn: CDTG trained once, on the distilled tail model of the first seed's KMDN (configs' cdtg_train section),
  its images generated and added to the training list (CDTG/generate.py, CDTG/expand.py) and their quality
  measured (CDTG/evaluate.py against the first seed's CE model); then a TGN classifier on that list for every
  seed (method tgn), and one on the same list with class-balanced re-sampling (method tgn_resample: the
  generated images on top of re-sampling). --tgn-list LIST uses an expanded list made elsewhere instead;
- dsva: the small CLIP fitted with the seed (data/synthetic/train_clip.py --seed), attributes annotated by it,
  a validation run, the final run; next to plain CLIP zero-shot of the same CLIP.

Writes <out>/results.md (mean ± std over seeds, and each method's per-seed paired difference against CE),
<out>/runs.csv (one row per run) and <out>/long_tail_groups.png. A run counts as finished when its results
file exists; finished runs are never redone, so the command resumes after an interruption.

The chains of runs: benchmarks/long_tail_plan.py; running them: benchmarks/chain_runner.py; the report:
benchmarks/long_tail_report.py.
"""
import argparse
import os
import sys

# benchmarks/ is a folder of the repository, not an installed package: its modules import as benchmarks.*
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.chain_runner import Runner
from benchmarks.long_tail_plan import (
    DEFAULT_METHODS,
    METHODS,
    PARTS,
    PROTOCOLS,
    SGD_ARGS,
    TGN_METHODS,
    VAL_SEED,
    all_chains,
)
from benchmarks.long_tail_report import write_report
from common.config import add_config_arg, parse_args
from common.errors import UserError, cli
from common.holdout import carve_lists
from common.layout import anno_path, read_classes, read_list
from common.options import add_output_arg
from common.split import optional_split


def get_args_parser():
    p = argparse.ArgumentParser("Long-tail, KMDN and DSVA benchmark over seeds")
    add_config_arg(p)
    p.add_argument("--data-root", default=None, help="processed data root (default: the config's "
                                                     "classification section's data_root)")
    p.add_argument("--methods", nargs="+", default=None, choices=list(METHODS),
                   help=f"long-tail methods (default: {' '.join(DEFAULT_METHODS)}, plus tgn and tgn_resample "
                        f"with the tgn part or --tgn-list; a list given here gets tgn added with the tgn "
                        f"part)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    p.add_argument("--tgn-list", default=None, help="an expanded training list made elsewhere "
                                                    "(CDTG/expand.py) for TGN, instead of the tgn part's "
                                                    "CDTG run")
    p.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS),
                   help="adam: the config's recipe (upstream's Adam, step schedule); sgd: --sgd-args on top "
                        "of it")
    p.add_argument("--sgd-args", default=SGD_ARGS, help="Classification/train.py flags of the sgd protocol")
    p.add_argument("--tune-list", default="carve",
                   help="'carve' (default): a validation list carved from the training list (--val-fraction "
                        "of each class, at least 1 and at most --val-max images, one kept for training), the "
                        "methods train on the rest; a FILE (its paths relative to <root>/train): that list "
                        "is held out; 'none': no validation, fixed reference values (--logit-adjust-tau, "
                        "--tau-norm, DRW at 80 %%, cRT's last epoch)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--val-max", type=int, default=20, help="most validation images of one class")
    p.add_argument("--drw-fractions", type=float, nargs="+", default=[0.25, 0.5, 0.8],
                   help="LDAM-DRW's candidate DRW starts as fractions of the epochs (the reference: 0.8)")
    p.add_argument("--logit-adjust-tau", type=float, default=1.0,
                   help="without validation: Menon et al.'s post-hoc default")
    p.add_argument("--tau-norm", type=float, default=1.0, help="without validation: tau of tau-normalisation")
    p.add_argument("--dsva-split", default="43", help="zero-shot split; the CLIP is fitted without its "
                                                      "unseen classes")
    p.add_argument("--dsva-val-args", default="--ways 5 --val-classes 2",
                   help="extra flags of the DSVA validation runs (pick epochs and gamma for the final run)")
    p.add_argument("--dsva-val-folds", type=int, default=1,
                   help="DSVA validation runs per seed, each holding out other seen classes (--val-fold "
                        "0..K-1); the final run takes the epochs and gamma of their mean validation figures")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (independent chains of runs)")
    p.add_argument("--threads", type=int, default=0, help="OMP threads per run (0: CPU cores // --jobs)")
    add_output_arg(p, default="runs/benchmark/default", help="benchmark folder")
    p.add_argument("--report-only", action="store_true",
                   help="write the report from finished runs, run nothing")
    p.set_defaults(lt_train_list=None, val_list=None)  # set by main() from --tune-list
    return p


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
    chains = all_chains(args, root)
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
