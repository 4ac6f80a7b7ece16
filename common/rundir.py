"""A run's folder: seeds, resolved args, provenance, per-epoch metrics; never silently overwritten."""
import json
import os
import platform
import random
import shutil
import subprocess
import sys

import numpy as np
import torch
import torch.distributed as dist
import yaml

from common.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_run_args(parser, stage: str) -> None:
    g = parser.add_argument_group("run")
    g.add_argument("--output-dir", default=None, help=f"run folder (default: runs/{stage}/<name>)")
    g.add_argument("--name", default="default", help="run name under runs/<stage>/")
    g.add_argument("--seed", type=int, default=0, help="seed for python, numpy and torch")
    g.add_argument("--resume", action="store_true", help="continue the run in the existing folder from ckpt_last.pt")
    g.add_argument("--overwrite", action="store_true", help="delete an existing run folder and start again")
    g.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def prepare(args, is_main: bool = True) -> str:
    """Resolve, check and create the run folder; seed; write args.yaml and meta.json. Returns the folder."""
    out = args.output_dir or os.path.join("runs", args.stage, args.name)
    args.output_dir = out
    exists = os.path.isdir(out) and any(os.scandir(out))
    if exists and not (args.resume or args.overwrite):
        raise UserError(f"run folder {out} already exists; pass --resume to continue it, --overwrite to replace "
                        f"it, or choose another --name")
    if args.resume and not os.path.isfile(os.path.join(out, "ckpt_last.pt")):
        raise UserError(f"--resume: no {os.path.join(out, 'ckpt_last.pt')} to continue from; drop --resume to start")
    if dist.is_initialized():  # every rank has checked before rank 0 creates the folder
        dist.barrier()
    if is_main:
        if exists and args.overwrite and not args.resume:
            shutil.rmtree(out)
        os.makedirs(out, exist_ok=True)
        resolved = {k: v for k, v in sorted(vars(args).items())}
        with open(os.path.join(out, "args.yaml"), "w") as f:
            yaml.safe_dump(resolved, f, sort_keys=True)
        meta = {"git_commit": git_commit(), "command": " ".join(sys.argv), "python": platform.python_version(),
                "torch": torch.__version__, "cuda": torch.version.cuda, "host": platform.node()}
        try:
            import torchvision
            meta["torchvision"] = torchvision.__version__
        except ImportError:
            pass
        with open(os.path.join(out, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2)
    seed_everything(args.seed)
    return out


class MetricsLog:
    """Appends one JSON object per line to <run>/metrics.jsonl (only on the main process)."""

    def __init__(self, folder: str, enabled: bool = True):
        self.path = os.path.join(folder, "metrics.jsonl")
        self.enabled = enabled

    def write(self, **row) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row, default=float) + "\n")

    def truncate_after(self, epoch: int) -> None:
        """On resume, drop rows of epochs after the checkpoint (written by a run that died later)."""
        if not (self.enabled and os.path.isfile(self.path)):
            return
        with open(self.path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        with open(self.path, "w") as f:
            for r in rows:
                if r.get("epoch", -1) <= epoch:
                    f.write(json.dumps(r) + "\n")
