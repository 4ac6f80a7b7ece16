"""The original authors' GAN checkpoints as they are: TGN's CDTG file (`200000.pt`) and unconditional SWAGAN
files (rosinality's and SatConcepts' layouts), recognised by their keys and shapes.

All three hold {g, d, g_ema, g_optim, d_optim, args, ada_aug_p} with this repository's tensor names. They
differ in two ways: the unconditional files have no class embeddings (G, D) and no fusion conv (D), and
rosinality's D has a 3x3 FromRGB where TGN and SatConcepts have 1x1. `load_into` copies every tensor of such a
file into our models (converting FromRGB exactly where the kernels differ) and refuses any partial load;
`generator_of` and `convert_to_project` give generate.py the g_ema of a TGN file with this repository's
metadata. CDTG/train.py's --init-weights (any of these or a file of its own) is checked, loaded and, with
--continue-original, continued by `read_initial_checkpoint`, `load_initial_weights` and `continue_original`.
"""
import os
import re
from dataclasses import dataclass

import torch

from CDTG.conditioning import FeatureProjection
from CDTG.model import build_models, model_config
from common import checkpoint
from common.errors import UserError
from common.layout import read_classes
from common.split import load_split

TOP_LEVEL = ("g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p")


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    conditional: bool
    from_rgb_kernel: int


LAYOUTS = (
    Layout("tgn", "TGN's CDTG checkpoint (conditional SWAGAN, 1x1 FromRGB)", True, 1),
    Layout("satconcepts", "an unconditional SWAGAN in SatConcepts' layout (1x1 FromRGB)", False, 1),
    Layout("rosinality", "an unconditional SWAGAN in rosinality's layout (3x3 FromRGB)", False, 3),
    Layout("conditional-3x3", "a conditional SWAGAN with a 3x3 FromRGB (CDTG/train.py --from-rgb-kernel 3)",
           True, 3),
)
CONDITIONAL_ONLY = {"g": ("label_emb.",), "d": ("label_emb.", "fusion_conv.")}
FROM_RGB = re.compile(r"^from_rgbs\.\d+\.conv\.0\.weight$")


def _state(sd) -> dict:
    return {k.removeprefix("module."): v for k, v in sd.items()}


def from_rgb_kernel_of(d_sd: dict) -> int | None:
    """D's FromRGB kernel size in a state dict (None if absent or mixed)."""
    kernels = {v.shape[-1] for k, v in d_sd.items() if FROM_RGB.match(k)}
    return kernels.pop() if len(kernels) == 1 else None


def detect(ck, path: str) -> Layout:
    """The layout of a loaded GAN checkpoint; a UserError naming the nearest layout and what differs
    otherwise."""
    if not isinstance(ck, dict) or not all(isinstance(ck.get(k), dict) for k in ("g", "d", "g_ema")):
        top = sorted(map(str, ck)) if isinstance(ck, dict) else [type(ck).__name__]
        missing = [k for k in TOP_LEVEL if not isinstance(ck, dict) or k not in ck]
        extra = [k for k in top if k not in TOP_LEVEL]
        extra = extra[:3] + ([f"{len(extra) - 3} more"] if len(extra) > 3 else [])
        raise UserError(f"{path} is none of the known GAN checkpoint layouts; nearest: "
                        f"{LAYOUTS[0].description}, whose keys {', '.join(missing) or 'none'} it lacks and "
                        f"whose file has no {', '.join(extra) or 'other keys'}; pass a 200000.pt, a SWAGAN "
                        f"checkpoint or a CDTG/train.py file")
    g, d = _state(ck["g"]), _state(ck["d"])
    if isinstance(ck.get("meta"), dict):
        return Layout("project", "a checkpoint of this repository's CDTG/train.py", True,
                      from_rgb_kernel_of(d))
    marks = ("label_emb.weight" in g, "label_emb.weight" in d, "fusion_conv.0.weight" in d)
    conditional = all(marks)
    kernel = from_rgb_kernel_of(d)
    if kernel in (1, 3) and (conditional or not any(marks)):
        for layout in LAYOUTS:
            if layout.conditional == conditional and layout.from_rgb_kernel == kernel:
                return layout
    # neither fully conditional nor fully unconditional, or no FromRGB at all: name the closest layout
    cond_keys = {"g": ["label_emb.weight"],
                 "d": ["label_emb.weight", "fusion_conv.0.weight", "fusion_conv.1.bias"]}
    present = [f"{m}.{k}" for m, keys in cond_keys.items() for k in keys if k in (g if m == "g" else d)]
    absent = [f"{m}.{k}" for m, keys in cond_keys.items() for k in keys if k not in (g if m == "g" else d)]
    nearest = LAYOUTS[0] if len(present) >= len(absent) else LAYOUTS[1]
    differ = absent if nearest.conditional else present
    if kernel is None:
        froms = sorted(k for k in d if FROM_RGB.match(k))
        kernels = sorted({d[k].shape[-1] for k in froms})
        differ = differ + ([f"d.from_rgbs.*.conv.0.weight (kernels {kernels})"]
                           if froms else ["d.from_rgbs.*.conv.0.weight (none)"])
    raise UserError(f"{path} is none of the known GAN checkpoint layouts; nearest: {nearest.description}; "
                    f"keys that differ: {', '.join(differ)}")


# ------------------------------------------------------------------------------------------------ FromRGB


def from_rgb_1_to_3(weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 equalised-lr kernel computing what a 1x1 one does: zeros, centre tap 3x the 1x1 weight (the
    run-time scale 1/sqrt(fan_in) is 3x smaller for 3x3, and padding 1 keeps the centre tap on the same
    pixel)."""
    out = weight.new_zeros(*weight.shape[:2], 3, 3)
    out[:, :, 1, 1] = 3 * weight[:, :, 0, 0]
    return out


def from_rgb_3_to_1(weight: torch.Tensor, name: str) -> torch.Tensor:
    """The 1x1 kernel of a 3x3 one whose off-centre taps are all zero; UserError where none is exact."""
    off = weight.clone()
    off[:, :, 1, 1] = 0
    if off.abs().max() > 0:
        raise UserError(f"{name} is a 3x3 FromRGB with non-zero off-centre taps, which no 1x1 FromRGB "
                        f"computes; train with --from-rgb-kernel 3")
    return weight[:, :, 1:2, 1:2] / 3


def convert_from_rgb(d_sd: dict, kernel: int) -> tuple[dict, int | None]:
    """D's state dict with every FromRGB kernel converted to `kernel`; also the file's kernel if it
    changed."""
    have = from_rgb_kernel_of(d_sd)
    if have is None or have == kernel:
        return d_sd, None
    convert = from_rgb_1_to_3 if kernel == 3 else (lambda w, k: from_rgb_3_to_1(w, f"d.{k}"))
    return {k: (convert(v) if kernel == 3 else convert(v, k)) if FROM_RGB.match(k) else v
            for k, v in d_sd.items()}, have


# ------------------------------------------------------------------------------------------------ loading


def _file_config(ck) -> dict:
    """The generator configuration an original file's args (or its tensors) give."""
    g = _state(ck["g_ema"])
    args = vars(ck["args"]) if hasattr(ck.get("args"), "__dict__") else (ck.get("args") or {})
    n_mlp = sum(1 for k in g if re.fullmatch(r"style\.\d+\.weight", k))
    n_noise = sum(1 for k in g if k.startswith("noises.noise_"))
    return {"size": int(args.get("size", 2 ** ((n_noise - 1) // 2 + 3))),
            "style_dim": int(args.get("latent", g["style.1.weight"].shape[0])),
            "n_mlp": int(args.get("n_mlp", n_mlp)),
            "channel_multiplier": int(args.get("channel_multiplier", 2)),
            "num_classes": int(g["label_emb.weight"].shape[0]) if "label_emb.weight" in g else None,
            "stored_args": sorted(args)}


def check_config(ck, run: dict, path: str) -> None:
    """The run's generator flags against the file's: one line with the flags to pass where they differ."""
    cfg = _file_config(ck)
    flags = {"size": "--size", "style_dim": "--style-dim", "n_mlp": "--n-mlp",
             "channel_multiplier": "--channel-multiplier"}
    if "channel_multiplier" not in cfg["stored_args"]:  # not in the tensors at every size: left to the shapes
        flags.pop("channel_multiplier")
    wrong = [f"{flag} {cfg[k]}" for k, flag in flags.items() if run.get(k) != cfg[k]]
    if cfg["stored_args"] and run.get("max_channels") is not None:  # an original file: channels never capped
        wrong.append("no --max-channels")
    if wrong:
        raise UserError(f"{path} holds a {cfg['size']} px SWAGAN (latent {cfg['style_dim']}, {cfg['n_mlp']} "
                        f"mapping layers, channel multiplier {cfg['channel_multiplier']}); pass "
                        f"{' '.join(wrong)}")
    if cfg["num_classes"] is not None and run.get("num_classes") != cfg["num_classes"]:
        raise UserError(f"{path} is a generator of {cfg['num_classes']} classes, but split.json has "
                        f"{run.get('num_classes')} tail classes; use the split it was trained with")


def plan(ck, path: str, models: dict) -> tuple:
    """Check that every tensor of a GAN checkpoint fits {'g', 'd', 'g_ema': module} (None modules are
    skipped).

    D's FromRGB is converted to the model's kernel. A file tensor with no place in the model, a shape that
    differs, or a model tensor left at init that is not conditional-only (in an unconditional file) is a
    UserError naming it. Returns (layout, {key: state dict to load}, names left at init, FromRGB kernel
    converted from or None). Only names and shapes are read, so the models may live on the meta device.
    """
    layout = detect(ck, path)
    states, left, converted = {}, [], None
    for key in ("g", "d", "g_ema"):
        model = models.get(key)
        if model is None:
            continue
        model = checkpoint.unwrap(model)
        sd = _state(ck[key])
        if key == "d":
            sd, was = convert_from_rgb(sd, model.from_rgb_kernel)
            converted = converted or was
        own = model.state_dict()
        unused = [k for k in sd if k not in own]
        if unused:
            more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
            raise UserError(f"{path}: {key}.{unused[0]}{more} has no place in this repository's model; is it "
                            f"a SWAGAN checkpoint of this architecture?")
        for k, v in sd.items():
            if own[k].shape != v.shape:
                raise UserError(f"{path}: {key}.{k} is {list(v.shape)} in the file but {list(own[k].shape)} "
                                f"in the model; pass the file's configuration (--size, --style-dim, --n-mlp, "
                                f"--channel-multiplier, --label-dim, no --max-channels)")
        allowed = () if layout.conditional else CONDITIONAL_ONLY["d" if key == "d" else "g"]
        missing = [k for k in own if k not in sd]
        bad = [k for k in missing if not k.startswith(allowed)]
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise UserError(f"{path}: {key}.{bad[0]}{more} is not in the file and would stay at init; pass a "
                            f"complete checkpoint")
        states[key] = sd
        left += [f"{key}.{k}" for k in missing]
    return layout, states, left, converted


def load_into(ck, path: str, models: dict) -> tuple:
    """plan(), then copy the tensors; prints what was recognised and converted. Returns (layout, left at
    init)."""
    layout, states, left, converted = plan(ck, path, models)
    for key, sd in states.items():
        checkpoint.unwrap(models[key]).load_state_dict(sd, strict=False)
    note = f"; D's FromRGB converted {converted}x{converted} -> {4 - converted}x{4 - converted} exactly" \
        if converted else ""
    print(f"recognised {path} as {layout.description}: every tensor of {', '.join(states)} loaded{note}")
    return layout, left


def continue_state(ck, path: str) -> dict:
    """What --continue-original restores: the iteration (from the file name, as the original), both optimiser
    states and ada_aug_p."""
    stem = os.path.splitext(os.path.basename(path))[0]
    if not stem.isdigit():
        raise UserError(f"--continue-original takes the iteration from the file name, as the original does "
                        f"(e.g. 200000.pt); {os.path.basename(path)} names none: rename the file")
    missing = [k for k in ("g_optim", "d_optim") if not isinstance(ck.get(k), dict)]
    if missing:
        raise UserError(f"{path} has no {' or '.join(missing)}; --continue-original needs the original's "
                        f"optimiser states (drop the flag to start from its weights only)")
    return {"iteration": int(stem), "g_optim": ck["g_optim"], "d_optim": ck["d_optim"],
            "ada_aug_p": float(ck.get("ada_aug_p") or 0.0)}


def restore_optimizer(optim: torch.optim.Optimizer, saved: dict, file_sd: dict, model: torch.nn.Module,
                      what: str, path: str) -> None:
    """Load an original Adam state into ours, parameter by name: the original's Adam indexes the parameters in
    its module order (its state dict's order), which differs from ours in D. Our optimiser's first parameters
    are `model`'s; any after them (P, trained in --mode paper) keep a fresh state. The saved lr and betas win,
    as in torch's load_state_dict."""
    ours = optim.state_dict()
    if len(saved.get("param_groups", ())) != 1 or len(ours["param_groups"]) != 1:
        raise UserError(f"{path}: {what} is not a one-group Adam state; is it an original CDTG checkpoint?")
    params = dict(checkpoint.unwrap(model).named_parameters())
    position = {name: i for i, name in enumerate(params)}
    file_names = [k for k in _state(file_sd) if k in params]
    saved_ids, our_ids = saved["param_groups"][0]["params"], ours["param_groups"][0]["params"]
    if len(saved_ids) != len(file_names):
        raise UserError(f"{path}: {what} holds {len(saved_ids)} parameters, the model {len(file_names)}; is "
                        f"it a checkpoint of this architecture?")
    state = {}
    for name, sid in zip(file_names, saved_ids):
        if sid not in saved["state"]:
            continue
        entry = saved["state"][sid]
        if "exp_avg" in entry and entry["exp_avg"].shape != params[name].shape:
            raise UserError(f"{path}: {what}'s state of {name} is {list(entry['exp_avg'].shape)}, the "
                            f"parameter {list(params[name].shape)}; continue with the file's own "
                            "--from-rgb-kernel")
        state[our_ids[position[name]]] = entry
    state.update({k: v for k, v in ours["state"].items() if k in our_ids[len(params):]})
    group = {**ours["param_groups"][0],
             **{k: v for k, v in saved["param_groups"][0].items() if k != "params"}}
    optim.load_state_dict({"state": state, "param_groups": [group]})


# ------------------------------------------------------------------------------------------------ generation


def generator_of(ck, path: str, data_root: str | None) -> tuple:
    """(g_ema state dict, None, meta) of a TGN CDTG file, with class ids and names from data_root's
    split.json.

    The original saves no P: meta['projection'] is None and generate.py draws a fresh random one, as the
    original.
    """
    layout = detect(ck, path)
    if not layout.conditional:
        raise UserError(f"{path} is not a CDTG generator but {layout.description}, which draws no tail "
                        f"classes; fine-tune it first with CDTG/train.py --init-weights {path}")
    if not data_root:
        raise UserError(f"{path} is {layout.description}, which holds no class names: pass --data-root (its "
                        f"split.json orders the tail classes)")
    info = read_classes(data_root)
    split = load_split(os.path.join(data_root, "split.json"), data_root)
    cfg = _file_config(ck)
    tail = list(split["tail"])
    if cfg["num_classes"] != len(tail):
        raise UserError(f"{path} is a generator of {cfg['num_classes']} classes, but {data_root}/split.json "
                        f"has {len(tail)} tail classes; pass the data root it was trained on")
    args = vars(ck["args"]) if hasattr(ck.get("args"), "__dict__") else (ck.get("args") or {})
    meta = {"dataset": info["dataset"], "data_root": os.path.abspath(data_root),
            "classes": tail, "names": [split["names"][c] for c in tail], "tail_model": None,
            "tail_input_size": None,
            "generator": {"size": cfg["size"], "style_dim": cfg["style_dim"], "n_mlp": cfg["n_mlp"],
                          "num_classes": cfg["num_classes"], "channel_multiplier": cfg["channel_multiplier"],
                          "max_channels": None},
            "projection": None, "r_train": 0.8, "mixing": float(args.get("mixing", 0.9)),
            "mixing_rule": "always",
            "mode": "code", "clip": None, "iteration": None, "source": {"file": os.path.abspath(path),
                                                                      "layout": layout.name}}
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem.isdigit():
        meta["iteration"] = int(stem)
    return _state(ck["g_ema"]), None, meta


def random_projection(feature_shape, style_dim: int, seed: int):
    """A fresh, seeded P (PyTorch's default Linear init), for generator files that hold none."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FeatureProjection(feature_shape, style_dim, 0)


def convert_to_project(in_path: str, out_path: str, data_root: str | None) -> None:
    """Write an original 200000.pt as this repository's generator file (what CDTG/train.py exports as
    generator.pt): g_ema, no P (generation draws a random one, as the original), class ids and names of
    data_root's split.json."""
    from CDTG import generator_file  # it reads the original's files through this module
    ck = checkpoint.load(in_path, "original CDTG checkpoint")
    g_state, p_state, meta = generator_of(ck, in_path, data_root)
    generator_file.write(out_path, g_state, p_state, meta)
    print(f"wrote {out_path}: the g_ema of {in_path} for {len(meta['classes'])} tail classes of "
          f"{meta['dataset']} (no P in the original file: generation draws a random one)")


# ----------------------------------------------------------------------------------------- --init-weights


def read_initial_checkpoint(args, num_classes: int, feature_shape=None) -> dict:
    """The --init-weights file, checked against the run's flags (on meta-device models, drawing no random
    number) before anything is written; a P in the file is checked against the P of layer3 maps of
    `feature_shape`."""
    ck = checkpoint.load(args.init_weights, "--init-weights checkpoint")
    layout = detect(ck, args.init_weights)
    if layout.name != "project":
        check_config(ck, model_config(args, num_classes), args.init_weights)
    with torch.device("meta"):
        g, d = build_models(args, num_classes)
        proj = FeatureProjection(feature_shape, args.style_dim, args.feature_pool, args.normalise_p) \
            if feature_shape else None
    converted = plan(ck, args.init_weights, {"g": g, "d": d, "g_ema": g})[3]
    for key in ("P", "P_ema"):
        if proj is not None and isinstance(ck.get(key), dict) and \
                {k: v.shape for k, v in ck[key].items()} != {k: v.shape
                                                             for k, v in proj.state_dict().items()}:
            raise UserError(f"{args.init_weights} holds a {key} of another shape; pass the run's "
                            f"--feature-pool and tail model")
    if args.continue_original and converted:
        raise UserError(f"{args.init_weights} has a {converted}x{converted} FromRGB: continue its run with "
                        f"--from-rgb-kernel {converted} (its optimiser state is of that shape)")
    if args.continue_original:
        if layout.name == "project":
            raise UserError(f"--continue-original is for the original authors' files; {args.init_weights} is "
                            f"this repository's: continue its run with --resume")
        state = continue_state(ck, args.init_weights)
        if state["iteration"] >= args.iter:
            raise UserError(f"{args.init_weights} is at iteration {state['iteration']}; pass an --iter above "
                            "it to continue")
    return ck


def load_initial_weights(ck, path: str, g, d, g_ema, proj, p_ema) -> None:
    """Every tensor of the --init-weights file into G, D, g_ema (and P where the file has one); one line names
    what stays at init."""
    _, left = load_into(ck, path, {"g": g, "d": d, "g_ema": g_ema})
    for key, module in (("P", proj), ("P_ema", p_ema)):
        if isinstance(ck.get(key), dict):
            module.load_state_dict(ck[key])
        else:
            left.append(key)
    print(f"left at init (not in the file): {', '.join(left) or 'none'}")


def continue_original(ck, path: str, trainer) -> int:
    """--continue-original: the original run's optimiser states and ada_aug_p; returns its iteration."""
    state = continue_state(ck, path)
    restore_optimizer(trainer.g_optim, state["g_optim"], ck["g"], trainer.g, "g_optim", path)
    restore_optimizer(trainer.d_optim, state["d_optim"], ck["d"], trainer.d, "d_optim", path)
    if trainer.augment is not None:
        trainer.augment.p = state["ada_aug_p"]
    elif state["ada_aug_p"]:
        print(f"{path} has ada_aug_p {state['ada_aug_p']}, unused without --augment")
    print(f"continuing {path} from iteration {state['iteration']}: g_optim, d_optim and ada_aug_p restored")
    return state["iteration"]
