"""The repository's one CLIP loader (open_clip models), and a differentiable image path for CLIP losses.

    load_clip("ViT-B-32", "openai")                  # a pretrained tag: downloads where a network exists
    load_clip("ViT-B-32", "RemoteCLIP-ViT-B-32.pt")  # an open_clip checkpoint file: a state dict, possibly
                                                     # {'state_dict': ...}, 'module.' prefixes, .safetensors,
                                                     # or a TorchScript archive (OpenAI's own files)
    load_clip("ViT-B-32", "clip-rsicd/")             # a Hugging Face CLIPModel folder such as
                                                     # flax-community/clip-rsicd (config.json + weights)
    load_clip("synth-vit-tiny", "synth_clip.pt")     # a checkpoint that carries its own model config
    load_clip("ViT-B-32", "flax-community/clip-rsicd")  # a Hugging Face id of such a folder:
                                                     # checkpoints/clip-rsicd if it is there, else the Hub
                                                     # (cache or download)

Custom architectures are open_clip model configs ({"embed_dim", "vision_cfg", "text_cfg"}) registered with
`register_model_config(name, cfg)`, which goes through open_clip's public `add_model_config(path)`. A
checkpoint may carry its config: {'state_dict', 'model_name', 'model_cfg'} (written by `checkpoint_dict`);
load_clip then registers it, so such a file opens in any process without importing the code that defined it.

The loaded model is in eval mode with frozen parameters; `image_features` is differentiable w.r.t. its input.
"""
import contextlib
import json
import logging
import os
import pickle
import re
import tempfile
from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
from open_clip.pretrained import download_pretrained_from_hf
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from safetensors import SafetensorError

from common.checkpoint import load as load_file
from common.errors import UserError
from common.jsonfile import read_json

HF_WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors")
SCHEMAS = ("hf-hub:", "local-dir:")
# No network, a host that refuses, a checksum mismatch (open_clip raises RuntimeError for it): requests',
# urllib's and huggingface_hub's errors are all OSError subclasses (open_clip turns a Hub failure into
# FileNotFoundError).
DOWNLOAD_ERRORS = (OSError, RuntimeError)
# What torch.load / safetensors raise for a damaged or truncated file: the zip reader raises RuntimeError, the
# unpickler anything from UnpicklingError to IndexError on garbage.
CORRUPT_FILE_ERRORS = (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError,
                       SafetensorError)
# where a Hugging Face CLIP folder given by its Hub id is looked for first: checkpoints/<repository name>
CHECKPOINTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_registered_dir = None  # this process's folder of registered config files (open_clip registers by file stem)


@dataclass
class ClipBundle:
    name: str
    model: torch.nn.Module  # open_clip CLIP, eval mode, parameters frozen
    preprocess: object  # PIL image -> normalised tensor (open_clip's validation transform)
    tokenizer: object  # list of str -> LongTensor [N, context_length]
    image_size: int
    mean: tuple
    std: tuple


# ---------------------------------------------------------------------------------------------- registration

def add_clip_args(group, model: str | None = "ViT-B-32", pretrained: str | None = "openai", prompt=False,
                  model_note: str = "", pretrained_note: str = "", prompt_note: str = "") -> None:
    """The CLIP flags, spelled and explained alike in every script: --clip-model, --clip-pretrained and,
    unless `prompt` is False, --clip-prompt with that default; each note ends its flag's help (e.g. where a
    default of None is taken from)."""
    group.add_argument("--clip-model", default=model, help="open_clip model name" + model_note)
    group.add_argument("--clip-pretrained", default=pretrained,
                       help="open_clip pretrained tag, checkpoint file, Hugging Face CLIP folder or Hub id" +
                            pretrained_note)
    if prompt is not False:
        group.add_argument("--clip-prompt", default=prompt,
                           help="prompt template per class; {name} = class name, {article} = a/an"
                                + prompt_note)


def register_model_config(name: str, cfg: dict) -> None:
    """Make `name` an open_clip model name for `cfg` in this process (re-registering replaces the config)."""
    global _registered_dir
    if not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise UserError(f"model config for '{name}' must hold embed_dim, vision_cfg and text_cfg")
    if name in open_clip.list_models() and open_clip.get_model_config(name) == cfg:
        return
    if _registered_dir is None:
        _registered_dir = tempfile.mkdtemp(prefix="open_clip_configs_")
    path = os.path.join(_registered_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    open_clip.add_model_config(path)


def checkpoint_dict(model: torch.nn.Module, name: str, cfg: dict, **meta) -> dict:
    """An open_clip checkpoint that carries its config: open_clip reads 'state_dict', load_clip the rest."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"state_dict": state, "model_name": name, "model_cfg": cfg, **meta}


# ---------------------------------------------------------------------------------------------- loading

def load_clip(model: str | None, pretrained: str | None = None, device="cpu") -> ClipBundle:
    """An open_clip model from a pretrained tag, a local checkpoint file, or a Hugging Face CLIP folder.

    `model` is an open_clip model name; it may be None when `pretrained` is a checkpoint that names its model
    (then that name), or a Hugging Face folder (then ViT-B-32). `pretrained=None` gives a randomly initialised
    model (for tests). Every problem with the arguments or files is a one-line UserError.
    """
    if model and model.startswith(SCHEMAS):
        return _load_schema(model, device)
    extra = {}
    state_dict = None
    if pretrained is not None and is_hub_id(pretrained):
        pretrained = hub_folder(pretrained)
    if pretrained is None:
        pass
    elif os.path.isdir(pretrained):
        state_dict, folder_config = read_hf_folder(pretrained)
        model = model or "ViT-B-32"
        _check_hf_config(folder_config, _model_cfg(model), pretrained)
        # the folder's activation decides: OpenAI-initialised CLIPs (clip-rsicd) use QuickGELU
        extra["quick_gelu"] = folder_config["vision_config"].get("hidden_act", "quick_gelu") == "quick_gelu"
    elif os.path.isfile(pretrained):
        state_dict, stored_name, stored_cfg = read_checkpoint(pretrained)
        if stored_cfg is not None:
            if model and model != stored_name:
                raise UserError(f"checkpoint {pretrained} holds model '{stored_name}', not '{model}'; "
                                f"pass '{stored_name}' as the CLIP model name")
            model = stored_name
            register_model_config(model, stored_cfg)
    elif _looks_like_path(pretrained):
        raise UserError(f"CLIP checkpoint {pretrained} does not exist; check the path")
    else:
        return _load_tag(model, pretrained, device)
    if not model:
        raise UserError(f"no CLIP model name given and {pretrained} does not name one; pass the model name "
                        f"(e.g. ViT-B-32)")
    _model_cfg(model)  # a clear error for an unknown name
    with quiet_open_clip():
        clip = open_clip.create_model(model, pretrained=None, **extra)
    if state_dict is not None:
        _load_strict(clip, state_dict, pretrained, model)
    return _bundle(model, clip, device)


def pretrained_or_random(value: str) -> str | None:
    """A --clip-pretrained value: 'none' asks for a randomly initialised CLIP (tests, benchmarks), else
    weights."""
    return None if str(value).lower() == "none" else value


def is_hub_id(value: str) -> bool:
    """'org/name' that is no local path: neither it nor its first folder exists, and it has no weights
    suffix."""
    return bool(HUB_ID.match(value)) and not os.path.exists(value) \
        and not os.path.isdir(value.split("/")[0]) \
        and not value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def hub_folder(repo_id: str) -> str:
    """The local folder of the Hugging Face CLIPModel repository `repo_id` (config.json + weights):
    checkpoints/<name> when it is there, else the Hub's (from its cache, or downloaded where a network
    exists)."""
    local = os.path.join(CHECKPOINTS, repo_id.split("/")[1])
    if os.path.isdir(local):
        return local
    from huggingface_hub import snapshot_download
    try:
        return snapshot_download(repo_id, allow_patterns=["config.json", *HF_WEIGHT_FILES])
    except DOWNLOAD_ERRORS as e:
        raise UserError(f"CLIP {repo_id} is not in {local} and could not be downloaded from the Hugging Face "
                        f"Hub ({_first_line(e)}; no network?); put its folder (config.json and "
                        f"{' or '.join(HF_WEIGHT_FILES)}) at {local}, or pass another "
                        "--clip-pretrained") from None


def _load_tag(model: str, tag: str, device) -> ClipBundle:
    if not model:
        raise UserError(f"pretrained tag '{tag}' needs a CLIP model name (e.g. ViT-B-32)")
    _model_cfg(model)
    tags = open_clip.list_pretrained_tags_by_model(model)
    if tag not in tags:
        known = ", ".join(tags[:8]) + (", ..." if len(tags) > 8 else "") if tags else "none"
        raise UserError(f"'{tag}' is neither a file nor a pretrained tag of {model} (tags: {known}); "
                        f"pass a local checkpoint file or folder")
    pretrained_cfg = open_clip.get_pretrained_cfg(model, tag)
    try:  # first the file alone, so that a download failure and a bad file are told apart
        path = open_clip.download_pretrained(pretrained_cfg)
    except DOWNLOAD_ERRORS as e:
        raise UserError(f"could not download the {model} '{tag}' weights ({_first_line(e)}; no network?); "
                        f"pass a local checkpoint file or Hugging Face CLIP folder instead") from None
    if not path:
        raise UserError(f"open_clip knows no download for {model} '{tag}'; pass a local checkpoint file")
    with _reading(path, f"the cached {model} '{tag}' weights"), quiet_open_clip():
        clip = open_clip.create_model(model, pretrained=path,
                                      force_quick_gelu=bool(pretrained_cfg.get("quick_gelu", False)),
                                      force_preprocess_cfg=merge_preprocess_dict({}, pretrained_cfg))
    return _bundle(model, clip, device)


def _load_schema(model: str, device) -> ClipBundle:
    """'hf-hub:org/repo' or 'local-dir:/folder': open_clip reads the config and weights from there."""
    schema, _, where = model.partition(":")
    if schema == "local-dir":
        config = os.path.join(where, "open_clip_config.json")
        if not os.path.isfile(config):
            raise UserError(f"CLIP model {model}: {config} does not exist; a local-dir: model is a folder "
                            f"with open_clip_config.json and its weights (open_clip_model.safetensors or "
                            f"open_clip_pytorch_model.bin)")
        doc = read_json(config, "open_clip config", "a local-dir: folder needs open_clip's own config file")
        if not isinstance(doc, dict) or not isinstance(doc.get("model_cfg"), dict):
            raise UserError(f"{config} has no 'model_cfg'; it is not an open_clip model folder")
        weights = _folder_weights(where)
        if weights is None:
            raise UserError(f"CLIP model {model}: {where} holds no weights file (.safetensors, .bin or .pth)")
    else:
        try:
            download_pretrained_from_hf(where, filename="open_clip_config.json")
            weights = download_pretrained_from_hf(where)
        except DOWNLOAD_ERRORS as e:
            raise UserError(f"could not download CLIP model {model} from the Hugging Face Hub "
                            f"({_first_line(e)}; no network?); pass a local checkpoint file or a local-dir: "
                            "folder instead") from None
    with _reading(weights, f"the weights of {model}"), quiet_open_clip():
        clip = open_clip.create_model(model)
    return _bundle(model, clip, device)


def _folder_weights(folder: str) -> str | None:
    files = sorted(f for f in os.listdir(folder) if f.endswith((".safetensors", ".bin", ".pth")))
    return os.path.join(folder, files[0]) if files else None


@contextlib.contextmanager
def _reading(path: str, what: str):
    """Turns a weights file that cannot be read into one line naming it; out of memory stays what it is."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except CORRUPT_FILE_ERRORS as e:
        raise UserError(f"{what} in {path} cannot be read ({type(e).__name__}: {_first_line(e)}); the file "
                        f"is damaged or truncated: delete it and run again to download it afresh") from None


def _first_line(e: BaseException) -> str:
    """The first sentence of an error's message (library messages run on for lines)."""
    lines = str(e).strip().splitlines()
    return (lines[0].split(". ")[0].rstrip(".") if lines else type(e).__name__)[:160]


def _bundle(name: str, clip: torch.nn.Module, device) -> ClipBundle:
    clip = clip.to(device).eval().requires_grad_(False)
    cfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(clip))
    size = cfg.size if isinstance(cfg.size, int) else cfg.size[0]
    return ClipBundle(name=name, model=clip, preprocess=image_transform_v2(cfg, is_train=False),
                      tokenizer=open_clip.get_tokenizer(name), image_size=int(size),
                      mean=tuple(cfg.mean), std=tuple(cfg.std))


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def _model_cfg(name: str) -> dict:
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise UserError(f"unknown CLIP model '{name}'; use an open_clip model name (e.g. ViT-B-32) or a "
                        f"checkpoint that carries its config")
    return cfg


@contextlib.contextmanager
def quiet_open_clip():
    """open_clip logs a warning for every model created without weights; we load them ourselves."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


# ---------------------------------------------------------------------------------------------- files

def _read_weights(path: str) -> dict:
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file as load_safetensors
        except ImportError:
            raise UserError(f"{path} is a .safetensors file but the safetensors package is not installed; "
                            f"install it or convert the file to a PyTorch .bin") from None
        try:
            return load_safetensors(path, device="cpu")
        # any failure to read a foreign file is this one line
        except Exception as e:  # noqa: BLE001
            raise UserError(f"CLIP weights {path} could not be read ({type(e).__name__})") from None
    return load_file(path, "CLIP checkpoint")


def read_checkpoint(path: str):
    """(state_dict in open_clip key names, stored model name or None, stored model config or None)."""
    obj = _read_weights(path)
    if isinstance(obj, torch.jit.ScriptModule):  # OpenAI's original JIT archives, torch.jit.script(open_clip)
        scalars = ("input_resolution", "context_length", "vocab_size")
        obj = {k: v for k, v in obj.state_dict().items() if k not in scalars and not k.endswith("attn_mask")}
    if not isinstance(obj, dict):
        raise UserError(f"CLIP checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    name, cfg = obj.get("model_name"), obj.get("model_cfg")
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {(k.removeprefix("module.")): v for k, v in obj.items()}
    if any(k.startswith(("vision_model.", "text_model.")) for k in state):
        state = hf_to_open_clip(state, path)
    return state, name, cfg


def read_hf_folder(folder: str):
    """(state_dict in open_clip key names, config.json) of a Hugging Face CLIPModel folder."""
    config_path = os.path.join(folder, "config.json")
    weights = [os.path.join(folder, f) for f in HF_WEIGHT_FILES if os.path.isfile(os.path.join(folder, f))]
    if not os.path.isfile(config_path) or not weights:
        raise UserError(f"{folder} is not a Hugging Face CLIP folder (config.json with pytorch_model.bin or "
                        f"model.safetensors); pass an open_clip checkpoint file instead")
    config = read_json(config_path, "Hugging Face CLIP config")
    if not isinstance(config, dict):
        raise UserError(f"{config_path} holds a JSON {type(config).__name__}, not a CLIPModel config object")
    for tower in ("vision", "text"):  # old configs keep overrides in *_config_dict
        config[f"{tower}_config"] = {**(config.get(f"{tower}_config") or {}),
                                     **(config.get(f"{tower}_config_dict") or {})}
    state = _read_weights(weights[0])
    if not any(k.startswith("vision_model.") for k in state):
        raise UserError(f"{weights[0]} has no vision_model.* weights; is it a CLIPModel checkpoint?")
    return hf_to_open_clip(state, weights[0]), config


# ------------------------------------------------------------------------------------------- HF -> open_clip

_BLOCK_NAMES = [  # (Hugging Face CLIPEncoderLayer, open_clip ResidualAttentionBlock)
    ("self_attn.out_proj.", "attn.out_proj."), ("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."),
]
_TOP_NAMES = [  # (Hugging Face CLIPModel, open_clip CLIP); projections are transposed separately
    ("vision_model.embeddings.class_embedding", "visual.class_embedding"),
    ("vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight"),
    ("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"),
    ("vision_model.pre_layrnorm.", "visual.ln_pre."),
    ("vision_model.post_layernorm.", "visual.ln_post."),
    ("text_model.embeddings.token_embedding.weight", "token_embedding.weight"),
    ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
    ("text_model.final_layer_norm.", "ln_final."),
    ("logit_scale", "logit_scale"),
]
_TOWERS = [("vision_model.encoder.layers.", "visual.transformer.resblocks."),
           ("text_model.encoder.layers.", "transformer.resblocks.")]


def hf_to_open_clip(state: dict, source: str = "checkpoint") -> dict:
    """Hugging Face CLIPModel key names -> open_clip CLIP (ViT) key names; q/k/v become in_proj_*."""
    out, qkv = {}, {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        if key in ("visual_projection.weight", "text_projection.weight"):
            out["visual.proj" if key.startswith("visual") else "text_projection"] = value.t().contiguous()
            continue
        tower = next(((hf, oc) for hf, oc in _TOWERS if key.startswith(hf)), None)
        if tower is not None:
            layer, _, rest = key[len(tower[0]):].partition(".")
            prefix = f"{tower[1]}{layer}."
            attn = rest[len("self_attn."):] if rest.startswith("self_attn.") else ""
            if attn[:6] in ("q_proj", "k_proj", "v_proj"):
                kind, _, param = attn.partition(".")
                qkv.setdefault((prefix, param), {})[kind[0]] = value
                continue
            new = next((prefix + oc + rest[len(hf):] for hf, oc in _BLOCK_NAMES if rest.startswith(hf)), None)
        else:
            new = next((oc + key[len(hf):] for hf, oc in _TOP_NAMES if key.startswith(hf)), None)
        if new is None:
            raise UserError(f"{source}: unexpected Hugging Face CLIP key '{key}'; only ViT CLIPModel weights "
                            f"can be converted")
        out[new] = value
    for (prefix, param), parts in qkv.items():
        if sorted(parts) != ["k", "q", "v"]:
            raise UserError(f"{source}: attention of {prefix} lacks some of q/k/v_proj.{param}")
        out[f"{prefix}attn.in_proj_{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out


def hf_config(cfg: dict) -> dict:
    """The config.json of a Hugging Face CLIPModel with the architecture of open_clip ViT config `cfg`."""
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    act = "quick_gelu" if cfg.get("quick_gelu") else "gelu"
    return {
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": cfg["embed_dim"],
        "vision_config": {"hidden_size": v["width"], "num_hidden_layers": v["layers"],
                          "num_attention_heads": v["width"] // v.get("head_width", 64),
                          "intermediate_size": int(v["width"] * v.get("mlp_ratio", 4.0)),
                          "image_size": v["image_size"], "patch_size": v["patch_size"], "hidden_act": act},
        "text_config": {"hidden_size": t["width"], "num_hidden_layers": t["layers"],
                        "num_attention_heads": t.get("heads", 8), "intermediate_size": int(t["width"] * 4),
                        "max_position_embeddings": t["context_length"], "vocab_size": t["vocab_size"],
                        "hidden_act": act},
    }


def _check_hf_config(config: dict, cfg: dict, folder: str) -> None:
    """Heads and sizes that the weights' shapes cannot reveal must match the open_clip model config."""
    expected = hf_config(cfg)
    for tower in ("vision_config", "text_config"):
        for field in ("num_attention_heads", "num_hidden_layers", "hidden_size", "patch_size", "image_size"):
            have, want = config[tower].get(field), expected[tower].get(field)
            if have is not None and want is not None and have != want:
                raise UserError(f"{folder}/config.json: {tower}.{field} is {have} but the chosen open_clip "
                                f"model has {want}; pass the matching model name")


def _load_strict(clip: torch.nn.Module, state: dict, source: str, name: str) -> None:
    own = clip.state_dict()
    if "logit_scale" in state and state["logit_scale"].shape != own["logit_scale"].shape:
        state["logit_scale"] = state["logit_scale"].reshape(own["logit_scale"].shape)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(wrong)} of other shape (e.g. {wrong[0]})" if wrong else ""]
        raise UserError(f"CLIP checkpoint {source} does not fit model '{name}': "
                        f"{', '.join(p for p in parts if p)} keys; pass the model name it was saved from")
    clip.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------------- features

@torch.no_grad()
def prompts_for(names, template: str) -> list:
    """One prompt per class name from a template with {name} and {article} ('a' or 'an')."""
    try:
        return [template.format(name=n, article="an" if n[:1].lower() in "aeiou" else "a") for n in names]
    except (KeyError, IndexError, ValueError):
        raise UserError(f"--clip-prompt '{template}' must use only {{name}} and {{article}}") from None


def encode_text_prompts(bundle: ClipBundle, prompts: list) -> torch.Tensor:
    """L2-normalised text features [len(prompts), embed_dim] (no gradient: prompts are fixed targets)."""
    device = next(bundle.model.parameters()).device
    tokens = bundle.tokenizer(list(prompts)).to(device)
    return F.normalize(bundle.model.encode_text(tokens).float(), dim=-1)


def to_clip_input(bundle: ClipBundle, images: torch.Tensor) -> torch.Tensor:
    """Square images in [-1, 1] [B, 3, H, W] -> CLIP's input: [0, 1], bicubic resize, CLIP mean/std.

    Differentiable; matches CLIP's preprocessing of a square image up to PIL's vs torch's resampling.
    """
    x = (images + 1) / 2
    if x.shape[-2:] != (bundle.image_size, bundle.image_size):
        x = F.interpolate(x, size=(bundle.image_size, bundle.image_size), mode="bicubic", align_corners=False,
                          antialias=True)
    mean = torch.tensor(bundle.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def image_features(bundle: ClipBundle, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised CLIP image features of generator images in [-1, 1]; gradients flow to `images`."""
    return F.normalize(bundle.model.encode_image(to_clip_input(bundle, images)).float(), dim=-1)


def logit_scale(bundle: ClipBundle) -> float:
    """CLIP's learned temperature exp(logit_scale) (100 for OpenAI's models)."""
    return float(bundle.model.logit_scale.exp())
