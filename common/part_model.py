"""The KMDN part-model file: the hand-over from KMDN (train.py, distill.py) to CDTG and the classifiers.

A part model is a torchvision ResNet returning (logits, layer3 feature map) (common.backbones.FeatureResNet),
with one output per class of its part (split.json's ordered `head` or `tail` list). Its file, written by
KMDN/train.py (model_final.pt, model_epoch_<e>.pt) and KMDN/distill.py (head_model.pt, tail_model.pt), is

    {"arch": "resnet50", "part": "head"|"tail", "classes": [original class ids, split.json order],
     "names": [their names], "num_classes": K, "img_size": 224, "norm": "half", "feature": "layer3",
     "feature_channels": 1024, "dataset": NAME, "model": state_dict}

so that CDTG needs nothing else: `model, meta = load_part_model(path)`; output k is class meta["classes"][k].
"""
from common import checkpoint, original_weights
from common.backbones import FeatureResNet, build_feature_resnet, is_resnet_name
from common.errors import UserError

PARTS = ("head", "tail")
META_KEYS = ("arch", "part", "classes", "names", "num_classes", "img_size", "norm", "feature",
             "feature_channels", "dataset")


def part_meta(model: FeatureResNet, arch: str, part: str, split: dict, img_size: int, norm: str) -> dict:
    classes = list(split[part])
    return {"arch": arch, "part": part, "classes": classes, "names": [split["names"][c] for c in classes],
            "num_classes": len(classes), "img_size": img_size, "norm": norm, "feature": "layer3",
            "feature_channels": checkpoint.unwrap(model).feature_channels, "dataset": split["dataset"]}


def save_part_model(model, path: str, meta: dict) -> None:
    checkpoint.export_weights(model, path, **{k: meta[k] for k in META_KEYS})


def read_part_file(path: str, what: str = "part model", split: dict | None = None,
                   part: str | None = None) -> dict:
    """The stored dict of a part-model file, checked for the fields of the format; UserError otherwise.

    A bare state dict (the original's UModel_epoch_<e>.pth / RModel_epoch_<e>.pth) is recognised by its
    layout, renamed, and given the format's fields: its part is `part`, else the one of split.json whose class
    count its head has; its classes are that part's ordered list (the original remapped labels 0..K-1 through
    it).
    """
    ck = checkpoint.load(path, what)
    if original_weights.is_bare_state_dict(ck):
        return original_part_file(ck, path, what, split, part)
    if not isinstance(ck, dict) or any(k not in ck for k in (*META_KEYS, "model")):
        raise UserError(f"{what} {path} is not a KMDN part model (no arch/part/classes); pass a "
                        "model_final.pt, head_model.pt or tail_model.pt written by KMDN/train.py or "
                        "KMDN/distill.py")
    return ck


def original_part_file(sd: dict, path: str, what: str, split: dict | None, part: str | None) -> dict:
    """Our part-model dict for an original bare state dict (see read_part_file)."""
    found = original_weights.recognise(sd, f"{what} {path}")
    if not is_resnet_name(found.arch):
        raise UserError(f"{what} {path} holds a {found.arch}, not a ResNet; pass a KMDN head or tail model")
    k = found.num_classes
    if split is None:
        raise UserError(f"{what} {path} is a bare state dict ({k} classes) whose class order comes from "
                        f"split.json; pass --data-root (or --split)")
    sizes = {p: len(split[p]) for p in PARTS}
    if part is None:
        fits = [p for p in PARTS if sizes[p] == k]
        if len(fits) != 1:
            why = "fits both parts" if fits else "fits neither part"
            fix = "pass --part head or --part tail" if fits else "pass the split.json it was trained with"
            raise UserError(f"{what} {path} has {k} classes, which {why} of split.json (head "
                            f"{sizes['head']}, tail {sizes['tail']}); " + fix)
        part = fits[0]
    elif sizes[part] != k:
        other = PARTS[1 - PARTS.index(part)]
        raise UserError(f"{what} {path} has {k} classes but split.json's {part} part has {sizes[part]}; is "
                        f"it the {other} model? Otherwise pass the split.json it was trained with")
    print(found.message(f"{what} {path}") + f"; {part} model, classes {split[part]} of split.json in that "
                                            "order")
    classes = list(split[part])
    return {"arch": found.arch, "part": part, "classes": classes,
            "names": [split["names"][c] for c in classes], "num_classes": k,
            "img_size": original_weights.INPUT_SIZE, "norm": original_weights.NORM, "feature": "layer3",
            "feature_channels": int(found.state_dict["layer4.0.conv1.weight"].shape[1]),
            "dataset": split["dataset"], "model": found.state_dict, "converted_from": found.layout.name}


def model_from_file(ck: dict, path: str) -> FeatureResNet:
    model = build_feature_resnet(ck["arch"], ck["num_classes"], "none", verbose=False)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError:
        raise UserError(f"{path}: its weights do not fit a {ck['arch']} with {ck['num_classes']} classes; "
                        f"the file is damaged or was edited") from None
    return model


def load_part_model(path: str, device="cpu", split: dict | None = None, part: str | None = None):
    """(model in eval mode on `device`, meta) from a part-model file; forward(x) returns (logits, feat3).
    `split` and `part` serve an original bare state dict (read_part_file)."""
    ck = read_part_file(path, split=split, part=part)
    model = model_from_file(ck, path).to(device).eval()
    return model, {k: v for k, v in ck.items() if k != "model"}


def check_part(meta: dict, path: str, part: str, split: dict, flag: str) -> None:
    """A stage-1 file must be of `part` and hold exactly split.json's ordered classes of that part."""
    if meta["part"] != part:
        raise UserError(f"{flag} {path} holds a {meta['part']} model; pass the {part} run's model_final.pt "
                        f"(runs/kmdn/<name>/{part}/model_final.pt)")
    if list(meta["classes"]) != list(split[part]):
        raise UserError(f"{flag} {path} was trained on {meta['num_classes']} {part} classes "
                        f"{meta['classes']}, but split.json's {part} part is {len(split[part])} classes "
                        f"{split[part]}; retrain it with KMDN/train.py --part {part} on this split")
