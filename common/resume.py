"""ckpt_last.pt, the one resume path of the four training loops (common/training.py's fit, used by
Classification/train.py, crt.py and KMDN/train.py; KMDN/distill.py; CDTG/train.py; DSVA/train.py).

save_last() writes <run>/ckpt_last.pt atomically after each epoch (CDTG: every --ckpt-every iterations): the
loop's states under the names the loop gives them (a model, optimiser, scheduler, GradScaler, or a dict of
them, stored as their state_dict()), its position (`epoch`: the last epoch finished, or `iteration`: the
iterations done), `rng` (every process's random state: a list under DDP, one state otherwise) and the loop's
own plain entries (args, history, meta). LastCheckpoint reads it back for --resume: restore() loads the
states, cuts metrics.jsonl back to the position, gives every process its own random state back and returns
the first epoch or iteration to run.
"""
import os

import torch

from common import checkpoint
from common.errors import UserError

LAST = "ckpt_last.pt"
# the position entry -> (its key in metrics.jsonl rows, what to add to it for the first step to run)
POSITIONS = {"epoch": ("epoch", 1), "iteration": ("iter", 0)}


def last_path(out: str) -> str:
    return os.path.join(out, LAST)


def _state_of(value):
    if isinstance(value, dict):
        return {k: v.state_dict() for k, v in value.items()}
    return value.state_dict()


def save_last(out: str, is_main: bool, states: dict, *, epoch: int | None = None,
              iteration: int | None = None, **entries) -> dict | None:
    """Write <out>/ckpt_last.pt: `states` as their state_dict()s, the position (exactly one of epoch and
    iteration), every process's random state, and `entries` as they are. A collective under DDP (it gathers
    the random states): call it on every process; rank 0 writes. Returns the dict written on rank 0 (to keep
    a snapshot of it too), None on the others."""
    if (epoch is None) == (iteration is None):
        raise ValueError("save_last: pass exactly one of epoch and iteration")
    rng = checkpoint.rng_state_of_every_rank()
    if not is_main:
        return None
    position = {"epoch": epoch} if epoch is not None else {"iteration": iteration}
    state = {**{name: _state_of(v) for name, v in states.items()}, **position, "rng": rng, **entries}
    checkpoint.atomic_save(state, last_path(out))
    return state


def _rank() -> int:
    import torch.distributed as dist
    return dist.get_rank() if dist.is_initialized() else 0


class LastCheckpoint:
    """A run's ckpt_last.pt, read for --resume; a missing or unreadable file is one line that names it."""

    def __init__(self, out: str, what: str = "checkpoint"):
        self.path = last_path(out)
        self.state = checkpoint.load(self.path, what)
        found = [k for k in POSITIONS if k in self.state] if isinstance(self.state, dict) else []
        if not found or "rng" not in self.state:
            raise UserError(f"{what} {self.path} is not a training checkpoint of this repository (it holds "
                            f"no epoch or iteration and random state); start the run again with --overwrite")
        self.position = found[0]

    def __getitem__(self, key: str):
        return self.state[key]

    def get(self, key: str, default=None):
        return self.state.get(key, default)

    @property
    def done(self) -> int:
        """The saved position: the last epoch finished, or the number of iterations done."""
        return self.state[self.position]

    @property
    def start(self) -> int:
        """The first epoch or iteration the resumed run runs."""
        return self.done + POSITIONS[self.position][1]

    def restore(self, states: dict, log=None, is_main: bool = True, rng: bool = True) -> int:
        """Load `states` (save_last's names; a GradScaler saved empty, without fp16 loss scaling, stays as it
        is), drop the rows of `log` (a rundir.MetricsLog) after the saved position, restore this process's
        random state (rng=False: the loop calls restore_rng() later, after set-up steps that draw from it) and
        say so on the main process. Returns the first epoch or iteration to run."""
        for name, target in states.items():
            self._load(name, target)
        if log is not None:
            log.truncate_after(self.done, key=POSITIONS[self.position][0])
        if rng:
            self.restore_rng()
        if is_main:
            print(f"resumed from {self.path} at {self.position} {self.start}")
        return self.start

    def _load(self, name: str, target) -> None:
        value = self.state.get(name)
        if isinstance(target, torch.amp.GradScaler) and not value:
            return
        if value is None:
            raise UserError(f"{self.path} holds no '{name}' entry: it was written by another script or "
                            f"version; start the run again with --overwrite")
        if isinstance(target, dict):
            for key, t in target.items():
                t.load_state_dict(value[key])
        else:
            target.load_state_dict(value)

    def restore_rng(self) -> bool:
        """This process's random state: its own from the list of every rank's; a single state (written by one
        process, or before every rank's was kept) on rank 0 only, the other ranks keeping their own seeding.
        Returns whether this process's state was restored."""
        rng = self.state["rng"]
        if isinstance(rng, dict) and _rank() != 0:
            return False
        checkpoint.set_rng_state(rng)
        return True
