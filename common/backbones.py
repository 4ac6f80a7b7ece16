"""torchvision classification models by name, with ImageNet, local-file or no initial weights."""
import os

import torch
from torch import nn
from torchvision import models

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


def load_state_dict_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"weights file {path} does not exist; pass 'imagenet', 'none' or an existing file")
    sd = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("model", "state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_matching(model: nn.Module, sd: dict) -> tuple[list, list]:
    """Copy every tensor whose name and shape match; returns (loaded, left_at_init) parameter names."""
    own = model.state_dict()
    keep = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(keep, strict=False)
    return sorted(keep), sorted(k for k in own if k not in keep)


def build_classifier(name: str, num_classes: int, weights: str = "imagenet", verbose: bool = True) -> nn.Module:
    """A torchvision model `name` with a num_classes head.

    weights: 'imagenet' (torchvision's DEFAULT enum; downloads where a network exists), 'none', or a file
    holding a state dict (a torchvision checkpoint, or one of ours); the head is kept only if its shape fits.
    """
    if name not in models.list_models(module=models):
        raise UserError(f"unknown model '{name}'; choose a torchvision classification model such as resnet50")
    if weights == "imagenet":
        try:
            model = models.get_model(name, weights="DEFAULT")
        except (OSError, RuntimeError) as e:  # no network, no cached file
            raise UserError(f"could not get ImageNet weights for {name} ({str(e).splitlines()[0][:120]}); put the "
                            f"torchvision file in ~/.cache/torch/hub/checkpoints or pass --weights FILE or none") from None
        return replace_head(model, num_classes)
    model = replace_head(models.get_model(name, weights=None), num_classes)
    if weights not in ("none", "", None):
        loaded, left = load_matching(model, load_state_dict_file(weights))
        if not loaded:
            raise UserError(f"no tensor of {weights} matches {name}; is it a {name} checkpoint?")
        if verbose:
            print(f"loaded {len(loaded)} tensors from {weights}; left at init: {left or 'none'}")
    return model
