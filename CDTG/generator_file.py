"""The generator file: what CDTG/train.py exports as generator.pt and CDTG/generate.py reads.

    {"g_ema": G's EMA weights, "P_ema": P's EMA weights (None in a file made from the original's 200000.pt),
     "meta": {"format": FORMAT, "dataset", "data_root", "tail_model", "classes", "names", "tail_input_size",
              "generator", "discriminator", "projection", "r_train", "mixing", "mixing_rule", "mode", "clip",
              "iteration", ...}}

data_root and tail_model are stored relative to the file's folder (common.paths), so that a run folder and the
data can move together. A training checkpoint (ckpt_last.pt) holds the same three entries and reads the same
way. The original authors' 200000.pt reads through CDTG/original.py, which gives its g_ema this meta.
"""
import os

from CDTG import original
from CDTG.conditioning import FeatureProjection
from CDTG.model import Generator
from common import checkpoint
from common.errors import UserError
from common.paths import relative, resolve

FORMAT = "cdtg-generator-v1"
PATH_KEYS = ("data_root", "tail_model")


def stored_meta(meta: dict, folder: str) -> dict:
    """meta as a file in `folder` stores it: tagged, its paths relative to the folder."""
    return {**meta, "format": FORMAT, **{k: relative(meta.get(k), folder) for k in PATH_KEYS}}


def write(path: str, g_state: dict, p_state: dict | None, meta: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    checkpoint.atomic_save({"g_ema": g_state, "P_ema": p_state, "meta": stored_meta(meta, folder)}, path)


def read(path: str, data_root: str | None = None) -> tuple:
    """(g_ema state dict, P state dict or None, meta with absolute paths) of a generator file or training
    checkpoint, or of the original authors' 200000.pt (class ids and names from data_root's split.json; no
    P)."""
    ck = checkpoint.load(path, "CDTG checkpoint")
    if isinstance(ck, dict) and all(k in ck for k in ("g_ema", "P_ema", "meta")):
        tag = ck["meta"].get("format") if isinstance(ck["meta"], dict) else None
        if tag != FORMAT:
            raise UserError(f"{path} is a generator file of format {tag!r}, which this code does not read "
                            f"(it reads {FORMAT!r}); export it again with the CDTG/train.py that wrote it")
        folder = os.path.dirname(os.path.abspath(path))
        return ck["g_ema"], ck["P_ema"], {**ck["meta"],
                                          **{k: resolve(ck["meta"].get(k), folder) for k in PATH_KEYS}}
    if isinstance(ck, dict) and "g_ema" in ck and "meta" not in ck:
        try:
            original.detect(ck, path)
        except UserError as e:
            raise UserError(f"{path} is not a CDTG generator, and "
                            f"{str(e).removeprefix(path + ' ')}") from None
        g_state, p_state, meta = original.generator_of(ck, path, data_root)
        return g_state, p_state, {**meta, "format": FORMAT}
    raise UserError(f"{path} is not a CDTG generator (no g_ema/P_ema/meta); pass the generator.pt or "
                    "ckpt_last.pt of a CDTG/train.py run, or the original 200000.pt (an unconditional "
                    f"SWAGAN file needs training first)")


def build(meta: dict, g_state: dict, p_state: dict | None, device, feature_shape=None,
          seed: int = 0) -> tuple:
    """(g_ema, P), frozen in eval mode; a file without P (the original's) gets a fresh random one seeded by
    `seed`, on layer3 maps of `feature_shape`, as the original draws one at generation."""
    cfg = meta["generator"]
    g = Generator(cfg["size"], cfg["style_dim"], cfg["n_mlp"], num_classes=cfg["num_classes"],
                  channel_multiplier=cfg["channel_multiplier"], max_channels=cfg["max_channels"])
    g.load_state_dict(g_state)
    if p_state is None:
        proj = original.random_projection(feature_shape, cfg["style_dim"], seed)
        print(f"P is random (seed {seed}): the generator file holds none, and the original draws a fresh one "
              f"at generation")
    else:
        pc = meta["projection"]
        proj = FeatureProjection(pc["feature_shape"], pc["style_dim"], pc["pool"], pc.get("normalise", False))
        proj.load_state_dict(p_state)
    return g.to(device).eval().requires_grad_(False), proj.to(device).eval().requires_grad_(False)
