"""torchvision classification models by name, with ImageNet, local-file or no initial weights."""
import os

import torch
from torch import nn
from torchvision import models

from common import checkpoint, original_weights
from common.errors import UserError


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the last linear layer of a torchvision classifier for a fresh one with num_classes outputs."""
    for attr in ("fc", "classifier", "head", "heads"):
        parent = model
        owner, key = None, attr
        if not hasattr(parent, attr):
            continue
        layer = getattr(parent, attr)
        # descend into Sequential heads to their last Linear
        while isinstance(layer, nn.Sequential):
            owner, key = layer, str(len(layer) - 1)
            layer = layer[-1]
        if isinstance(layer, nn.Linear):
            new = nn.Linear(layer.in_features, num_classes)
            setattr(owner if owner is not None else parent, key, new)
            return model
    raise UserError(f"cannot find the classification layer of {type(model).__name__}; use a ResNet, VGG, "
                    f"EfficientNet, DenseNet, ConvNeXt or ViT")


def load_state_dict_file(path: str, arch: str | None = None, verbose: bool = True) -> dict:
    """The state dict of a weights file (a bare one, or under 'model' / 'state_dict'), in torchvision's names:
    a file in one of the original authors' layouts (common.original_weights) is renamed, and says so."""
    if not os.path.isfile(path):
        raise UserError(f"weights file {path} does not exist; pass 'imagenet', 'none' or an existing file")
    sd = checkpoint.load(path, what="weights file")
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise UserError(f"weights file {path} holds a {type(sd).__name__}, not a state dict")
    sd = original_weights.strip_module_prefix(sd)
    layout = original_weights.original_layout(sd)
    if layout is None:
        return sd
    found = original_weights.recognise(sd, path, arch, layouts=(layout,))
    if verbose:
        print(found.message(path))
    return found.state_dict


def read_classifier_file(path: str, arch: str | None = None, verbose: bool = True) -> dict:
    """A classifier weights file as {'model': state dict, 'arch', ...what it stores}. A bare state dict (the
    original's result.pth, a torchvision file) is recognised by its layout, renamed, and its model
    inferred."""
    ck = checkpoint.load(path, what="weights file")
    if not original_weights.is_bare_state_dict(ck):
        return ck
    found = original_weights.recognise(ck, path, arch)
    if verbose:
        print(found.message(path))
    return {"model": found.state_dict, "arch": found.arch, "num_classes": found.num_classes}


def load_classifier(path: str, num_classes: int, arch: str | None = None, verbose: bool = True):
    """(model with the file's weights, the file's dict without 'model') for `num_classes` outputs; `arch`
    overrides the architecture the file names."""
    ck = read_classifier_file(path, arch, verbose)
    arch = arch or ck.get("arch") or (ck.get("args") or {}).get("model")
    if not arch:
        raise UserError(f"{path} does not name its architecture; pass --model (e.g. resnet50)")
    stored = ck.get("num_classes") or (len(ck["names"]) if ck.get("names") else None)
    if stored and stored != num_classes:
        raise UserError(f"{path} has {stored} classes but the data set has {num_classes}; pass the data root "
                        f"it was trained on")
    model = build_classifier(arch, num_classes, "none", verbose=False)
    try:
        model.load_state_dict(ck.get("model", ck))
    except RuntimeError:
        raise UserError(f"{path} does not fit a {arch} with {num_classes} classes; check --model") from None
    return model, {**{k: v for k, v in ck.items() if k != "model"}, "arch": arch}


def load_matching(model: nn.Module, sd: dict) -> tuple[list, list, list]:
    """Copy every tensor whose name and shape match; returns the names (loaded, left at init, unused from
    sd)."""
    own = model.state_dict()
    keep = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(keep, strict=False)
    return sorted(keep), sorted(k for k in own if k not in keep), sorted(k for k in sd if k not in keep)


def name_list(names: list, limit: int = 8) -> str:
    """'none', or up to `limit` names and how many there are in all."""
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{len(names)}: {shown}, ..."


def imagenet_weights(name: str, weights: str):
    """The torchvision weights enum for 'imagenet' (IMAGENET1K_V1, as torchvision's old pretrained=True) or an
    enum name such as IMAGENET1K_V2 / DEFAULT; None when `weights` is neither."""
    members = models.get_model_weights(name).__members__
    if weights == "imagenet":
        return members.get("IMAGENET1K_V1") or members["DEFAULT"]
    if weights in members:
        return members[weights]
    if weights.isupper() and not os.path.exists(weights):
        raise UserError(f"{name} has no torchvision weights '{weights}'; choose one of {', '.join(members)}, "
                        f"'imagenet', 'none' or a file")
    return None


def build_classifier(name: str, num_classes: int, weights: str = "imagenet",
                     verbose: bool = True) -> nn.Module:
    """A torchvision model `name` with a num_classes head.

    weights: 'imagenet' (torchvision's IMAGENET1K_V1, what pretrained=True gave; downloads where a network
    exists), a torchvision enum name (IMAGENET1K_V2, DEFAULT, ...), 'none', or a file holding a state dict (a
    torchvision checkpoint, or one of ours); the head is kept only if its shape fits.
    """
    check_model_name(name)
    enum = imagenet_weights(name, weights) if weights not in ("none", "", None) else None
    if enum is not None:
        try:
            model = models.get_model(name, weights=enum)
        except (OSError, RuntimeError) as e:  # no network, no cached file
            raise UserError(f"could not get ImageNet weights for {name} ({str(e).splitlines()[0][:120]}); "
                            "put the torchvision file in ~/.cache/torch/hub/checkpoints or pass --weights "
                            "FILE or none") from None
        return replace_head(model, num_classes)
    model = replace_head(models.get_model(name, weights=None), num_classes)
    if weights not in ("none", "", None):
        loaded, left, unused = load_matching(model, load_state_dict_file(weights, name, verbose))
        if not loaded:
            raise UserError(f"no tensor of {weights} matches {name}; is it a {name} checkpoint?")
        if verbose:
            print(f"loaded {len(loaded)} tensors from {weights}; left at init: {name_list(left)}; "
                  f"unused from the file: {name_list(unused)}")
    return model


def check_model_name(name: str) -> None:
    """A one-line error for a name torchvision does not know (cheap: call it before creating a run folder)."""
    if name not in models.list_models(module=models):
        raise UserError(f"unknown model '{name}'; choose a torchvision classification model such as resnet50")


# --- ResNets that also return their layer3 feature map (KMDN's head/tail models, CDTG's conditioning) ---

class FeatureResNet(nn.Module):
    """A torchvision ResNet whose forward returns (logits, layer3 feature map).

    The ResNet's own modules are re-registered under their torchvision names, so the state dict has exactly
    torchvision's keys (projection shortcuts are `layerN.0.downsample.*`) and Classification/ can load it too.
    layer3 is [B, 1024, H/16, W/16] for ResNet-50/101/152 and [B, 256, H/16, W/16] for ResNet-18/34.
    """

    PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")

    def __init__(self, resnet: nn.Module):
        super().__init__()
        for name in self.PARTS:
            setattr(self, name, getattr(resnet, name))
        self.feature_channels = resnet.layer4[0].conv1.in_channels  # = layer3's output channels

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feat3 = self.layer3(self.layer2(self.layer1(x)))
        logits = self.fc(torch.flatten(self.avgpool(self.layer4(feat3)), 1))
        return logits, feat3


def is_resnet_name(name: str) -> bool:
    return name in models.list_models(module=models) and name.startswith(("resnet", "resnext", "wide_resnet"))


def reinit_projection_shortcuts(model: nn.Module) -> list:
    """Re-initialise every projection shortcut (downsample conv + BN) as a fresh torchvision ResNet would.

    This reproduces upstream's custom ResNet, whose shortcuts were named `shortcut.*` and so never received
    the ImageNet weights. Returns the names of the re-initialised modules.
    """
    names = []
    for layer_name in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(getattr(model, layer_name)):
            if block.downsample is None:
                continue
            conv, bn = block.downsample[0], block.downsample[1]
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.ones_(bn.weight)
            nn.init.zeros_(bn.bias)
            bn.reset_running_stats()
            names.append(f"{layer_name}.{i}.downsample")
    return names


def check_feature_resnet_name(name: str) -> None:
    if not is_resnet_name(name):
        raise UserError(f"unknown model '{name}' for a feature ResNet; choose resnet18, resnet34, resnet50, "
                        f"resnet101 or resnet152")


def build_feature_resnet(name: str, num_classes: int, weights: str = "imagenet",
                         upstream_shortcut_init: bool = False, verbose: bool = True) -> FeatureResNet:
    """build_classifier's ResNet `name` (weights 'imagenet', 'none' or a file; every matching tensor, the
    projection shortcuts included, is loaded) wrapped to return (logits, layer3)."""
    check_feature_resnet_name(name)
    model = FeatureResNet(build_classifier(name, num_classes, weights, verbose=verbose))
    if upstream_shortcut_init:
        reset = reinit_projection_shortcuts(model)
        if verbose:
            print(f"--upstream-shortcut-init: re-initialised {', '.join(reset)} (as upstream's ResNet left "
                  "them)")
    return model
