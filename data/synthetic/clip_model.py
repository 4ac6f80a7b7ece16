"""The small CLIP fitted to the embedded data set: its open_clip model config, and the captions and prompts.

The config is registered with open_clip under MODEL_NAME by `build_model`; train_clip.py saves it inside the
checkpoint (common.clip.checkpoint_dict), so `common.clip.load_clip(MODEL_NAME, <file>)` opens the file in
any process without importing this module.

Captions are compositional and drawn afresh every time an image is used: a random subset of the image's
attributes in varied phrasings, with the class name most of the time, so that the text tower learns single
attributes ("something round on sand") as well as class names ("a storage tank").
"""
import numpy as np
import open_clip

from common.clip import quiet_open_clip, register_model_config
from common.errors import UserError

MODEL_NAME = "synth-vit-tiny"


def model_config(image_size: int = 64, patch_size: int = 16, width: int = 128, layers: int = 3,
                 embed_dim: int = 128, context_length: int = 32) -> dict:
    """An open_clip ViT config sized for CPU: 64 px / patch 16 = 16 tokens, widths 128, 3 layers per tower."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "patch_size": patch_size, "width": width, "layers": layers,
                       "head_width": 32},
        "text_cfg": {"context_length": context_length, "vocab_size": 49408, "width": width,
                     "heads": width // 32, "layers": layers},
    }


def build_model(cfg: dict, name: str = MODEL_NAME):
    """A randomly initialised open_clip CLIP for `cfg`, registered under `name`."""
    register_model_config(name, cfg)
    with quiet_open_clip():
        return open_clip.create_model(name)


# ---------------------------------------------------------------------------------------------- language

def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


PREFIXES = ["", "an aerial image of ", "a photo of ", "a satellite image of ", "a remote sensing image of "]
SURFACE_PHRASES = ["on {}", "surrounded by {}", "over {}", "next to {}"]
AMOUNT_PHRASES = {  # {} = adjectives ("white round"), possibly empty
    "several": ["several {} objects", "a group of {} objects", "multiple {} objects"],
    "small": ["a small {} object", "one small {} object"],
    "large": ["a large {} object", "one big {} structure"],
}
NAME_FORMS = ["{desc}, {name}", "{name}: {desc}", "{desc} showing {name}"]


def _object_phrase(adjectives: list, amount: str | None, rng: np.random.Generator) -> str:
    adj = " ".join(adjectives)
    if amount in AMOUNT_PHRASES:
        return " ".join(rng.choice(AMOUNT_PHRASES[amount]).format(adj).split())
    if not adj:
        return "something"
    return f"something {adj}" if rng.random() < 0.5 else with_article(f"{adj} object")


def make_caption(name: str, attributes: dict, rng: np.random.Generator, p_name: float = 0.75,
                 p_attribute: float = 0.6) -> str:
    """One caption of an image of class `name` with attributes {group: value}, e.g. 'an aerial image of a
    white round object on sand, a storage tank', 'something round on sand', 'a storage tank'."""
    use_name = rng.random() < p_name
    chosen = {g: v for g, v in attributes.items() if rng.random() < p_attribute}
    if not chosen and not use_name:
        group = list(attributes)[int(rng.integers(len(attributes)))]
        chosen = {group: attributes[group]}
    prefix = PREFIXES[int(rng.integers(len(PREFIXES)))]
    named = with_article(name)
    if not chosen:
        return prefix + named
    adjectives = [chosen[g] for g in ("colour", "shape") if g in chosen]
    adjectives += [v for g, v in chosen.items() if g not in ("colour", "shape", "size", "surface")]
    desc = _object_phrase(adjectives, chosen.get("size"), rng)
    if "surface" in chosen:
        desc += " " + SURFACE_PHRASES[int(rng.integers(len(SURFACE_PHRASES)))].format(chosen["surface"])
    if not use_name:
        return prefix + desc
    form = NAME_FORMS[int(rng.integers(len(NAME_FORMS)))]
    return prefix + form.format(desc=desc, name=named)


def class_prompt(name: str) -> str:
    return f"a photo of {with_article(name)}"


def described_class_prompt(name: str, attributes: dict) -> str:
    """A class prompt with its attributes, the way zero-shot learning describes a class never seen."""
    adjectives = [attributes[g] for g in ("colour", "shape") if g in attributes]
    amount = attributes.get("size")
    adj = " ".join(adjectives)
    if amount in AMOUNT_PHRASES:
        desc = " ".join(AMOUNT_PHRASES[amount][0].format(adj).split())
    else:
        desc = with_article(f"{adj} object") if adj else "something"
    if "surface" in attributes:
        desc += f" on {attributes['surface']}"
    return f"a photo of {desc}, {with_article(name)}"


def class_attribute_dicts(info: dict) -> list:
    """[{group: attribute}] per class from classes.json's class_attributes and attribute_groups."""
    group_of = {a: g for g, names in info["attribute_groups"].items() for a in names}
    out = []
    for name, row in zip(info["names"], info["class_attributes"]):
        attrs = {}
        for a, on in zip(info["attributes"], row):
            if on:
                group = group_of.get(a, a)
                if group in attrs:
                    raise UserError(f"class '{name}' has two attributes of group '{group}' ({attrs[group]}, "
                                    f"{a}); captions expect at most one per group")
                attrs[group] = a
        out.append(attrs)
    return out
