"""Rebuild the original authors' files from the manifests in tests/fixtures/upstream/ (see its README).

    sd = state_dict_of("kmdn_epoch_pth.json", "tail")        # {name: tensor}, the original's key order
    path = write_original(tmp_path, "cdtg_200000_size32.json")  # a file laid out like 200000.pt
    ref = reference("cdtg_size32_ref.pt")
"""
import argparse
import json
import math
import os

import torch

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "upstream")
_DTYPES = {"torch.float32": torch.float32, "torch.float64": torch.float64, "torch.int64": torch.int64}


def manifest(name: str) -> dict:
    with open(os.path.join(FIXTURES, name)) as f:
        return json.load(f)


def reference(name: str) -> dict:
    return torch.load(os.path.join(FIXTURES, name), map_location="cpu", weights_only=False)


def _draw(entry: dict, rule: str, gen: torch.Generator) -> torch.Tensor:
    name, shape, dtype = entry["name"], tuple(entry["shape"]), _DTYPES[entry["dtype"]]
    if "values" in entry:
        return torch.tensor(entry["values"], dtype=dtype).reshape(shape)
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    if name.endswith("running_var"):
        return (0.5 + torch.rand(shape, generator=gen)).to(dtype)
    if name.endswith("running_mean"):
        return (0.1 * torch.randn(shape, generator=gen)).to(dtype)
    noise = torch.randn(shape, generator=gen)
    if rule == "unit":
        return (noise * float(entry.get("scale", 1.0))).to(dtype)
    if rule != "fan_in":
        raise ValueError(f"unknown scale rule {rule}")
    if len(shape) >= 2:
        return (noise / math.sqrt(math.prod(shape[1:]))).to(dtype)
    return (1 + 0.1 * noise if name.endswith("weight") else 0.1 * noise).to(dtype)


def regen(model: dict) -> dict:
    """The seeded state dict of one manifest model, keys in the manifest's order."""
    gen = torch.Generator().manual_seed(int(model["seed"]))
    return {e["name"]: _draw(e, model["scale_rule"], gen) for e in model["tensors"]}


def state_dict_of(manifest_name: str, model: str) -> dict:
    return regen(manifest(manifest_name)["models"][model])


def _adam_state(sd: dict, model: dict, lr: float, betas: tuple) -> dict:
    """A fresh Adam's state_dict over the trainable tensors (no literal buffers, no noise buffers, floats
    only)."""
    literal = {e["name"] for e in model["tensors"] if "values" in e}
    params = [torch.nn.Parameter(v.clone()) for k, v in sd.items()
              if k not in literal and v.is_floating_point() and not k.startswith("noises.")]
    return torch.optim.Adam(params, lr=lr, betas=betas).state_dict()


def cdtg_args(size: int, num_classes: int = 12, **extra) -> argparse.Namespace:
    """The original CDTG train.py's saved args (the fields a loader needs, with the original defaults)."""
    fields = {"path": "data", "iter": 200000, "batch": 8, "n_sample": 64, "size": size, "r1": 10.0,
              "path_regularize": 2.0, "path_batch_shrink": 2, "d_reg_every": 16, "g_reg_every": 4,
              "mixing": 0.9, "ckpt": None, "lr": 0.002, "channel_multiplier": 2, "wandb": False,
              "local_rank": 0, "augment": False, "augment_p": 0.0, "ada_target": 0.6, "ada_length": 500000,
              "ada_every": 256, "num_classes": num_classes, "latent": 512, "n_mlp": 8, "start_iter": 0,
              "distributed": False}
    fields.update(extra)
    return argparse.Namespace(**fields)


def write_original(folder, manifest_name: str, file_name: str | None = None, model: str | None = None) -> str:
    """Save the rebuilt weights of `manifest_name` in the original file's layout; returns the path.

    Bare state-dict artefacts (classifier, KMDN) take `model` (e.g. "head" / "tail"); GAN checkpoints are
    written as {g, d, g_ema, g_optim, d_optim, args, ada_aug_p}.
    """
    m = manifest(manifest_name)
    models = m["models"]
    if {"g", "d", "g_ema"} <= set(models):
        sds = {k: regen(models[k]) for k in ("g", "d", "g_ema")}
        size = int(manifest_name.rsplit("size", 1)[1].split(".")[0])
        conditional = manifest_name.startswith("cdtg")
        d_ratio, g_ratio = 16 / 17, 4 / 5
        obj = {**sds,
               "g_optim": _adam_state(sds["g"], models["g"], 0.002 * g_ratio, (0.0, 0.99 ** g_ratio)),
               "d_optim": _adam_state(sds["d"], models["d"], 0.002 * d_ratio, (0.0, 0.99 ** d_ratio)),
               "args": cdtg_args(size) if conditional else _unconditional_args(size),
               "ada_aug_p": 0.0}
        file_name = file_name or ("200000.pt" if conditional else "550000.pt")
    else:
        key = model or next(iter(models))
        obj = regen(models[key])
        file_name = file_name or f"{key}.pth"
    path = os.path.join(str(folder), file_name)
    torch.save(obj, path)
    return path


def _unconditional_args(size: int) -> argparse.Namespace:
    args = vars(cdtg_args(size))
    args.pop("num_classes")
    args["arch"] = "swagan"
    return argparse.Namespace(**args)
