"""Atomic checkpoint writes, RNG state capture for exact resume, and weights-only export."""
import os
import random
import tempfile

import numpy as np
import torch

from common.errors import UserError


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".pt")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path: str, what: str = "checkpoint") -> dict:
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{what} {path} could not be read ({type(e).__name__}); is it a PyTorch file?") from None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
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
    """Weights-only file for release: {'model': state_dict, **meta} (class names, input size, normalisation)."""
    atomic_save({"model": unwrap(model).state_dict(), **meta}, path)
