"""Recognising the bare state dicts that the original authors' code saves, and renaming them to torchvision's
names.

Known layouts (each a set of key renames onto a torchvision ResNet):

- torchvision: the keys as torchvision names them (an ImageNet file, a model's own state_dict()).
- TGN classifier (`Classification/save_model/result.pth`): torchvision ResNet-50 whose head is
  `fc = Sequential(Linear(2048, C))`, so its keys are `fc.0.weight` / `fc.0.bias`.
- TGN KMDN ResNet (`UModel_epoch_<e>.pth`, `RModel_epoch_<e>.pth`): the original's own ResNet-50, whose
  projection shortcuts are `layerN.0.shortcut.{0,1}.*` where torchvision says `downsample`.

`recognise(sd, source)` tells which layout a state dict is in and which ResNet it holds (the candidates of its
depth and block type whose every key and shape fit), and returns it renamed; a state dict of no known layout
is a UserError naming the nearest layout and the first keys that differ.
"""
import functools
import re
from dataclasses import dataclass, field

import torch
from torchvision import models

from common.errors import UserError

# what the original TGN models read: 224 x 224 images in [-1, 1] ('half' normalisation)
INPUT_SIZE, NORM = 224, "half"


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    renames: tuple = ()  # (regex, replacement) applied to every key

    def rename(self, sd: dict) -> tuple:
        """(renamed state dict, [(old, new)] of the keys that changed)."""
        out, changed = {}, []
        for key, value in sd.items():
            new = key
            for pattern, repl in self.renames:
                new = re.sub(pattern, repl, new)
            out[new] = value
            if new != key:
                changed.append((key, new))
        return out, changed


TORCHVISION = Layout("torchvision", "a torchvision state dict")
TGN_CLASSIFIER = Layout("tgn-classifier", "the original TGN classifier layout (result.pth: head fc.0.*)",
                        ((r"^fc\.0\.", "fc."),))
TGN_KMDN = Layout("tgn-kmdn", "the original TGN KMDN layout (UModel/RModel_epoch_*.pth: layerN.0.shortcut.*)",
                  ((r"^(layer\d+\.\d+)\.shortcut\.", r"\1.downsample."),))
LAYOUTS = (TORCHVISION, TGN_CLASSIFIER, TGN_KMDN)

# (block type, blocks per stage) -> torchvision ResNets of that depth, the usual one first; told apart by
# shapes
_DEPTHS = {("basic", (2, 2, 2, 2)): ("resnet18",), ("basic", (3, 4, 6, 3)): ("resnet34",),
           ("bottleneck", (3, 4, 6, 3)): ("resnet50", "resnext50_32x4d", "wide_resnet50_2"),
           ("bottleneck", (3, 4, 23, 3)): ("resnet101", "resnext101_32x8d", "resnext101_64x4d",
                                           "wide_resnet101_2"),
           ("bottleneck", (3, 8, 36, 3)): ("resnet152",)}


@dataclass
class Recognised:
    layout: Layout
    arch: str
    num_classes: int
    state_dict: dict
    renamed: list = field(default_factory=list)  # [(original key, torchvision key)]

    def message(self, source: str) -> str:
        line = f"{source}: recognised {self.layout.description}: {self.arch}, {self.num_classes} classes"
        if self.renamed:
            shown = ", ".join(f"{a} -> {b}" for a, b in self.renamed[:2])
            more = f" and {len(self.renamed) - 2} more" if len(self.renamed) > 2 else ""
            line += f"; renamed {len(self.renamed)} keys to torchvision's ({shown}{more})"
        return line


def is_bare_state_dict(obj) -> bool:
    """A dict of tensors only: what `torch.save(model.state_dict())` writes."""
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def original_layout(sd: dict) -> Layout | None:
    """The first original (non-torchvision) layout whose renames apply to some key of `sd`, else None."""
    return next((lay for lay in LAYOUTS if lay.renames and lay.rename(sd)[1]), None)


def strip_module_prefix(sd: dict) -> dict:
    return {k.removeprefix("module."): v for k, v in sd.items()}


def resnet_candidates(sd: dict) -> tuple:
    """The torchvision ResNets whose depth and block type fit a state dict in torchvision names (most usual
    first); empty if its keys don't tell."""
    blocks = []
    for stage in range(1, 5):
        ids = {int(m.group(1)) for k in sd for m in [re.match(rf"layer{stage}\.(\d+)\.", k)] if m}
        blocks.append(max(ids) + 1 if ids else 0)
    kind = "bottleneck" if any(k.startswith("layer1.0.conv3.") for k in sd) else "basic"
    return _DEPTHS.get((kind, tuple(blocks)), ())


@functools.lru_cache(maxsize=32)
def model_shapes(arch: str, num_classes: int) -> dict:
    """{key: shape} of torchvision's `arch` with `num_classes` outputs, built without allocating weights."""
    with torch.device("meta"):
        model = models.get_model(arch, weights=None, num_classes=num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _num_classes(sd: dict) -> int:
    """Outputs of the last linear layer (the last 2-D weight in state-dict order), else ImageNet's 1000."""
    last = [v for k, v in sd.items() if k.endswith("weight") and isinstance(v, torch.Tensor) and v.dim() == 2]
    return int(last[-1].shape[0]) if last else 1000


def differences(sd: dict, shapes: dict) -> list:
    """Readable differences of a state dict from the expected {key: shape}: missing, unexpected, other
    shape."""
    diffs = [f"missing {k}" for k in shapes if k not in sd]
    diffs += [f"unexpected {k}" for k in sd if k not in shapes]
    diffs += [f"{k} {tuple(sd[k].shape)} instead of {shapes[k]}" for k in shapes
              if k in sd and tuple(sd[k].shape) != shapes[k]]
    return diffs


def recognise(sd: dict, source: str, arch: str | None = None, layouts=LAYOUTS) -> Recognised:
    """Which of `layouts` the bare state dict `sd` is in, and which torchvision model (`arch`, else inferred
    from the keys, else resnet50 as the original); returns it renamed to torchvision's keys."""
    sd = strip_module_prefix(sd)
    if arch is not None and arch not in models.list_models(module=models):
        raise UserError(f"unknown model '{arch}'; choose a torchvision classification model such as resnet50")
    best = None
    for layout in layouts:
        renamed, changed = layout.rename(sd)
        k = _num_classes(renamed)
        for name in [arch] if arch else (resnet_candidates(renamed) or ("resnet50",)):
            diffs = differences(renamed, model_shapes(name, k))
            if not diffs:
                return Recognised(layout, name, k, renamed, changed)
            if best is None or len(diffs) < len(best[2]):
                best = (layout, name, diffs)
    layout, name, diffs = best
    name_it = "" if arch else ", or name the model with --model"
    raise UserError(f"{source} is a state dict of none of the known layouts; nearest: {layout.description} "
                    f"of a {name}, but {len(diffs)} keys differ ({'; '.join(diffs[:3])}); pass a file "
                    f"written by this repository or by the original code" + name_it)
