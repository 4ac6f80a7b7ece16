"""Atomic checkpoint writes, safe checkpoint reads, RNG state capture for exact resume, and weights-only
export."""
import argparse
import errno
import glob
import os
import pickle
import random
import re
import secrets

import numpy as np
import torch

from common.errors import UserError, deferred_interrupt

TMP_PREFIX = ".tmp_"
TRUSTED = False  # set by --trust-checkpoint (common.config): full pickle loads


def _numpy_globals() -> list:
    """The numpy objects that pickled arrays, dtypes and scalars name (an RNG state holds a uint32 array)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    found = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
             (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),  # files written with numpy 1.x
             (multiarray.scalar, "numpy.core.multiarray.scalar")]
    found += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return found


# Plain types that the project's own checkpoints and the original authors' files hold beside tensors (the
# original CDTG 200000.pt stores its argparse.Namespace); everything else a weights-only load refuses.
SAFE_GLOBALS = [argparse.Namespace, *_numpy_globals()]


def trust(flag: bool) -> None:
    global TRUSTED
    TRUSTED = bool(flag)


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves half a file.

    The file gets the mode of any other output (0666 less the umask); a full disk is one line that says the
    previous file is intact; a Ctrl-C during the write is raised once the new file is in place.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{TMP_PREFIX}{os.path.basename(path)}.{secrets.token_hex(4)}.pt")
    with deferred_interrupt():  # Ctrl-C while saving takes effect once the file is complete
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(obj, f)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:
            if not _disk_full(e):
                raise
            before = "the previous file is intact" if os.path.exists(path) else "nothing was written"
            if os.path.basename(path).startswith("ckpt"):
                before = before.replace("file", "checkpoint")
            raise UserError(f"no space left on {folder} while saving {os.path.basename(path)}; {before}; "
                            f"free some space and resume") from None
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def _disk_full(e: Exception) -> bool:
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(e)  # torch's zip writer reports a short write as "unexpected pos"
    return "unexpected pos" in text or "No space left" in text


def remove_stale_temporaries(folder: str) -> list:
    """Delete the temporary files that a process killed during atomic_save left in `folder` (and one level
    below); only call it while holding the folder's run lock. Returns the removed paths."""
    removed = []
    for pattern in (os.path.join(folder, f"{TMP_PREFIX}*.pt"),
                    os.path.join(folder, "*", f"{TMP_PREFIX}*.pt")):
        for path in glob.glob(pattern):
            os.remove(path)
            removed.append(path)
    return removed


def load(path: str, what: str = "checkpoint") -> dict:
    """torch.load on the CPU, weights-only unless --trust-checkpoint; any failure is one line naming the
    file."""
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist; check the path")
    try:
        if TRUSTED:
            return torch.load(path, map_location="cpu", weights_only=False)
        try:
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                return torch.load(path, map_location="cpu", weights_only=True)
        except RuntimeError as e:  # e.g. OpenAI's CLIP files: TorchScript, which runs no Python on load
            if "TorchScript archive" not in str(e):
                raise
            return torch.jit.load(path, map_location="cpu")
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", text, re.IGNORECASE)
        if found:
            raise UserError(f"{what} {path} holds a {found.group(1)} object, which a safe (weights-only) "
                            "load refuses because unpickling it can run code; if you trust the file's "
                            f"source, pass --trust-checkpoint") from None
        raise UserError(f"{what} {path} could not be read: it is not a PyTorch checkpoint, or is damaged") \
            from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, ImportError, KeyError, IndexError,
            TypeError, MemoryError) as e:  # a truncated zip, a foreign or damaged file
        raise UserError(f"{what} {path} could not be read: it is truncated, or not a PyTorch checkpoint "
                        f"({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_state_of_every_rank():
    """rng_state(), or under DDP the list of every rank's (a collective: call it on every rank), so that a
    resumed run gives each process back its own stream (each rank is seeded differently)."""
    import torch.distributed as dist
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return rng_state()
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, rng_state())
    return states


def set_rng_state(state) -> None:
    """Restore rng_state() or, from a list of every rank's, this rank's."""
    if isinstance(state, list):
        import torch.distributed as dist
        rank = dist.get_rank() if dist.is_initialized() else 0
        if rank >= len(state):
            raise UserError(f"the checkpoint holds the random state of {len(state)} processes; resume it "
                            f"with --nproc_per_node {len(state)}")
        state = state[rank]
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module behind DDP and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def export_weights(model: torch.nn.Module, path: str, **meta) -> None:
    """Weights-only file for release: {'model': state_dict, **meta} (class names, input size,
    normalisation)."""
    atomic_save({"model": unwrap(model).state_dict(), **meta}, path)
