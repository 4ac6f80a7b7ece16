"""A run's folder: seeds, resolved args, provenance, per-epoch metrics; locked while a run uses it, never
silently overwritten, resumed only with the settings it was started with."""
import fcntl
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

from common import checkpoint, dashboard, errors
from common.errors import UserError
from common.options import add_device_arg

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Settings that may differ on --resume: where and how fast the run goes, how long it goes on, what it logs.
# Every other setting shapes the result and must equal the run's args.yaml.
MAY_CHANGE_ON_RESUME = ("workers", "device", "epochs", "iter", "resume", "overwrite", "trust_checkpoint",
                        "config", "output_dir", "name", "stop_after", "log_every", "ckpt_every",
                        "snapshot_every", "save_every", "vis_images", "report_to", "eval_batch_size",
                        "compile")
RECORDED_ON_RESUME = ("epochs", "iter")  # an extended run is recorded with its new length
LOCK_FILE = ".lock"
# all that a start which failed before its first result leaves
SETUP_FILES = ("args.yaml", "meta.json", LOCK_FILE)
_held_lock = None  # (folder, open file) of the run folder this process holds


def add_run_args(parser, stage: str) -> None:
    g = parser.add_argument_group("run")
    g.add_argument("--output-dir", default=None, help=f"run folder (default: runs/{stage}/<name>)")
    g.add_argument("--name", default="default", help="run name under runs/<stage>/")
    g.add_argument("--seed", type=int, default=0, help="seed for python, numpy and torch (DDP: + rank)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in the existing folder from ckpt_last.pt, with the run's own "
                        "settings (only "
                        f"{', '.join('--' + k.replace('_', '-') for k in ('workers', 'device', 'epochs'))} "
                        "and logging flags may change)")
    g.add_argument("--overwrite", action="store_true", help="delete an existing run folder and start again")
    add_device_arg(g)
    dashboard.add_report_arg(g)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=5, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=5, check=False).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _only_setup_files(folder: str) -> bool:
    """True when `folder` holds nothing but what prepare() writes (and empty folders, stale temporaries)."""
    for dirpath, _, files in os.walk(folder):
        for f in files:
            top = dirpath == folder
            if not (f.startswith(checkpoint.TMP_PREFIX) or (top and f in SETUP_FILES)):
                return False
    return True


def _stopped_start(args) -> bool:
    """True when the folder holds a run of this stage (its args.yaml says so) that stopped before its first
    checkpoint: nothing in it can be continued, so the same command starts it again."""
    try:
        recorded = _read_run_args(os.path.join(args.output_dir, "args.yaml"))
    except UserError:
        return False
    stage = getattr(args, "stage", None)
    return stage is not None and bool(recorded) and recorded.get("stage") == stage


def _contents(folder: str) -> list:
    return [e.name for e in os.scandir(folder) if e.name != LOCK_FILE] if os.path.isdir(folder) else []


def _read_run_args(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError):
        raise UserError(f"--resume: {path} is damaged; the run's settings cannot be checked") from None
    return doc if isinstance(doc, dict) else None


def changed_settings(args, recorded: dict, may_change=MAY_CHANGE_ON_RESUME) -> list:
    """'--flag value (the run has value)' for every setting of args that differs from the recorded ones."""
    now = yaml.safe_load(yaml.safe_dump(vars(args)))  # the same types as the file (tuples become lists)
    return [f"{_flag(k)} {now[k]!r} (the run has {recorded[k]!r})" for k in sorted(now)
            if k in recorded and k not in may_change and now[k] != recorded[k]]


def check_resume_settings(args, recorded: dict, path: str) -> None:
    """Refuse a --resume whose settings differ from the run's recorded ones (outside MAY_CHANGE_ON_RESUME)."""
    changed = changed_settings(args, recorded)
    if changed:
        raise UserError(f"--resume with other settings than the run's {path}: {'; '.join(changed)}; resume "
                        "with the run's own settings (drop those flags), or start a new run (another "
                        "--name)")


def prepare_output(args, done_file: str, may_change=MAY_CHANGE_ON_RESUME) -> str:
    """The output folder of a stage that the same command continues (no --resume, no checkpoint): 'new'
    (created), 'continue' (a run of this stage with the same settings that has not written `done_file`, its
    last output) or 'done' (it has). Refuses a folder that another stage or other files fill, and a run with
    other settings (outside `may_change`), naming them. Locks the folder, writes args.yaml and meta.json (a
    continued run keeps its own args.yaml and adds the command to meta.json), seeds, and sets
    args.output_dir."""
    out = args.output_dir = args.output_dir or os.path.join("runs", args.stage, args.name)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--output-dir {out} is a file, not a folder; choose a folder path")
    case = "new"
    if _contents(out):
        args_path = os.path.join(out, "args.yaml")
        recorded = _read_run_args(args_path) if os.path.isfile(args_path) else None
        if not recorded or recorded.get("stage") != args.stage:
            raise UserError(f"output folder {out} already exists and holds files that no {args.stage} run "
                            f"wrote; nothing there is overwritten: choose another --name or --output-dir")
        changed = changed_settings(args, recorded, may_change)
        if changed:
            raise UserError(f"output folder {out} holds a {args.stage} run with other settings: "
                            f"{'; '.join(changed)}; nothing there is overwritten: run it with the settings "
                            f"in its args.yaml, or choose another --name or --output-dir")
        case = "done" if os.path.isfile(os.path.join(out, done_file)) else "continue"
    os.makedirs(out, exist_ok=True)
    lock(out)
    if case != "done":
        _write_records(args, out, "resume" if case == "continue" else "new")
    errors.at_end_of_main(release)
    seed_everything(args.seed)
    return case


def check_folder(args) -> str:
    """The checks of prepare() that only read: which case the run folder is in. Returns 'new', 'reuse',
    'resume' or 'overwrite'."""
    out = args.output_dir
    if args.resume and args.overwrite:
        raise UserError(f"--resume continues the run in {out} and --overwrite deletes it; pass only one of "
                        "them")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--output-dir {out} is a file, not a folder; choose a folder path")
    ckpt = os.path.join(out, "ckpt_last.pt")
    contents = _contents(out)
    failed_start = bool(contents) and not os.path.isfile(ckpt) and (_only_setup_files(out)
                                                                    or _stopped_start(args))
    if args.resume:
        if not os.path.isfile(ckpt):
            why = ("its start failed before the first checkpoint" if failed_start else
                   "there is no run there" if not contents else "the run there never wrote one")
            raise UserError(f"--resume: no {ckpt} to continue from ({why}); drop --resume to start it")
        recorded = _read_run_args(os.path.join(out, "args.yaml"))
        if recorded is not None:
            check_resume_settings(args, recorded, os.path.join(out, "args.yaml"))
        return "resume"
    if args.overwrite and contents:
        return "overwrite"
    if failed_start:
        return "reuse"
    if contents:
        if os.path.isfile(ckpt):
            raise UserError(f"run folder {out} already exists and holds a run (ckpt_last.pt); pass --resume "
                            f"to continue it, --overwrite to replace it, or choose another --name")
        raise UserError(f"run folder {out} already exists and holds outputs but no checkpoint to resume "
                        f"from; pass --overwrite to replace it, or choose another --name")
    return "new"


def lock(folder: str) -> None:
    """Hold an exclusive OS lock on <folder>/.lock for the life of this process (released when it dies)."""
    global _held_lock
    key = os.path.realpath(folder)
    if _held_lock is not None:
        if _held_lock[0] == key:
            return
        release()  # this process starts another run (in-process callers such as tests)
    # held open: the lock lives as long as the file
    f = open(os.path.join(folder, LOCK_FILE), "a")  # noqa: SIM115
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise UserError(f"run folder {folder} is in use by another process (it holds "
                        f"{os.path.join(folder, LOCK_FILE)}); wait for that run to end, or choose another "
                        "--name") from None
    _held_lock = (key, f)


def release() -> None:
    """Give up the run folder's lock (at the end of a script's main; a process that dies loses it anyway)."""
    global _held_lock
    if _held_lock is not None:
        _held_lock[1].close()
        _held_lock = None


def prepare(args, is_main: bool = True) -> str:
    """Resolve, check, lock and create the run folder; seed; write args.yaml and meta.json. Returns the
    folder.

    A folder that holds only the set-up files of a start that failed before its first checkpoint is started
    again without --overwrite. Call it after every input check a script can make, so that a mistake leaves no
    folder behind.
    """
    out = args.output_dir or os.path.join("runs", args.stage, args.name)
    args.output_dir = out
    dashboard.check_available(getattr(args, "report_to", None))
    case = check_folder(args)
    if dist.is_initialized():  # every rank has checked before rank 0 creates the folder
        dist.barrier()
    if is_main:
        created = not os.path.isdir(out)
        os.makedirs(out, exist_ok=True)
        lock(out)  # on failure the folder is another process's: leave it alone
        try:
            case = check_folder(args)  # again under the lock: another start may have got there first
        except UserError:
            if created and not _contents(out):
                shutil.rmtree(out, ignore_errors=True)
            raise
        if case in ("overwrite", "reuse"):
            if case == "reuse":
                print(f"note: run folder {out} holds a start that stopped before its first checkpoint; "
                      f"starting it again")
            for name in _contents(out):
                path = os.path.join(out, name)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
        for path in checkpoint.remove_stale_temporaries(out):
            print(f"note: removed {path}, left by a process killed while saving")
        _write_records(args, out, case)
        errors.on_interrupt(lambda: interrupted_note(out))
        errors.on_out_of_memory(lambda flag: out_of_memory_note(out, flag))
        errors.at_end_of_main(release)
    rank = dist.get_rank() if dist.is_initialized() else 0
    seed_everything(args.seed + rank)  # DDP: different augmentations per process, as DINO and timm
    return out


def _write_records(args, out: str, case: str) -> None:
    resolved = {k: v for k, v in sorted(vars(args).items())}
    meta = {"git_commit": git_commit(), "command": " ".join(sys.argv), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "host": platform.node()}
    try:
        import torchvision
        meta["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    args_path, meta_path = os.path.join(out, "args.yaml"), os.path.join(out, "meta.json")
    if case == "resume" and os.path.isfile(args_path):  # keep the run's record; add what may have changed
        recorded = _read_run_args(args_path) or {}
        resolved = {**recorded,
                    **{k: resolved[k] for k in RECORDED_ON_RESUME if k in resolved and k in recorded}}
        try:
            with open(meta_path, encoding="utf-8") as f:
                first = json.load(f)
        except (OSError, ValueError):
            first = {}
        resume = {k: meta[k] for k in ("git_commit", "command")}
        meta = {**first, "resumes": [*first.get("resumes", []), resume]} if first else meta
    with open(args_path, "w") as f:
        yaml.safe_dump(resolved, f, sort_keys=True)
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)


def interrupted_note(out: str) -> str:
    ckpt = os.path.join(out, "ckpt_last.pt")
    if os.path.isfile(ckpt):
        return f"interrupted; the last checkpoint is {ckpt}: run the same command with --resume to continue"
    return f"interrupted before the first checkpoint of {out}; run the same command again to start it"


def out_of_memory_note(out: str, flag: str) -> str:
    """What to do after running out of GPU memory, '{smaller}' standing for the flag with a smaller value.
    --resume takes another --eval-batch-size, but not another --batch-size (it shapes the result)."""
    ckpt = os.path.join(out, "ckpt_last.pt")
    if not os.path.isfile(ckpt):
        return "nothing to continue from yet: run the same command with {smaller}"
    if flag.lstrip("-").replace("-", "_") in MAY_CHANGE_ON_RESUME:
        return f"the last checkpoint {ckpt} is intact: run the same command with --resume and {{smaller}}"
    return (f"the last checkpoint {ckpt} is intact, but --resume keeps the run's batch size: start again "
            f"with {{smaller}} and --overwrite (or another --name)")


class MetricsLog:
    """Appends one JSON object per line to <run>/metrics.jsonl (only on the main process), the run's record;
    `report_to` (--report-to) also mirrors every row to a dashboard (see common.dashboard)."""

    def __init__(self, folder: str, enabled: bool = True, report_to: str | None = None):
        self.path = os.path.join(folder, "metrics.jsonl")
        self.enabled = enabled
        self.dashboard = dashboard.open_dashboard(report_to, folder) if enabled else None
        if self.dashboard is not None:
            errors.at_end_of_main(self.close)

    def write(self, **row) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row, default=float) + "\n")
            if self.dashboard is not None:
                self.dashboard.write(row)

    def close(self) -> None:
        if self.dashboard is not None:
            self.dashboard.close()
            self.dashboard = None

    def rows(self) -> list:
        """The rows written so far (by this run and, after a resume, by the runs before it)."""
        rows = []
        if os.path.isfile(self.path):
            with open(self.path) as f:
                for line in f:
                    try:
                        rows.append(json.loads(line))
                    except ValueError:  # a line half-written by a killed process
                        pass
        return rows

    def truncate_after(self, last: int, key: str = "epoch") -> None:
        """On resume, drop the rows whose `key` (epoch, iter) is after the checkpoint's `last` (written by a
        run that died later); the dashboard drops its steps after `last` too."""
        if not self.enabled:
            return
        if self.dashboard is not None:
            self.dashboard.purge_after(last)
        if not os.path.isfile(self.path):
            return
        rows = self.rows()
        with open(self.path, "w") as f:
            for r in rows:
                if r.get(key, last) <= last:
                    f.write(json.dumps(r) + "\n")
