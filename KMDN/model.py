"""KMDN's head and tail models: each part's data subset and the mutual distillation.

The part-model file they are saved in is common/part_model.py's.
"""
import os

import torch
import torch.nn.functional as F

from common.datasets import ImageList
from common.layout import anno_path
from common.split import label_map
from common.transforms import classification

# --- the data of one part ---

def part_dataset(root: str, split: dict, part: str, subset: str, img_size: int, norm: str, hflip: bool = True,
                 on_corrupt: str = "skip", train: bool | None = None) -> ImageList:
    """The images of `part`'s classes in <root>/<subset>, labels remapped to 0..K-1 in split.json's order."""
    train = subset == "train" if train is None else train
    return ImageList(os.path.join(root, subset), [anno_path(root, subset)],
                     classification(img_size, train, norm, hflip), num_classes=len(split["names"]),
                     label_map=label_map(split, part), on_corrupt=on_corrupt)


# --- mutual distillation ---

def phase(epoch: int, interval: int) -> tuple:
    """(student, teacher) parts of a distillation epoch: tail teaches head in the first `interval` epochs,
    head teaches tail in the next `interval`, and so on alternating."""
    return ("head", "tail") if (epoch // interval) % 2 == 0 else ("tail", "head")


def step_lr(epoch: int, base: float, drop_epochs, gamma: float) -> float:
    """The lr set at the start of `epoch`: base * gamma^(number of drop epochs <= epoch)."""
    return base * gamma ** sum(epoch >= d for d in drop_epochs)


def distill_lr(epoch: int, interval: int, base: float, drop_epochs, gamma: float, per_phase: bool) -> float:
    """The student's lr in `epoch`: step_lr of the global epoch (upstream), or with per_phase of the epoch's
    index within its phase, so that every phase starts at `base`."""
    return step_lr(epoch % interval if per_phase else epoch, base, drop_epochs, gamma)


def feature_mse(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Mean over all elements of the squared difference of the layer3 maps (upstream's MSELoss), in fp32."""
    return F.mse_loss(student_feat.float(), teacher_feat.float())


def unit_rms(feat: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Each sample's map divided by its root mean square (so its mean square is 1)."""
    return feat / feat.pow(2).mean(dim=tuple(range(1, feat.dim())), keepdim=True).clamp_min(eps).sqrt()


def normalised_mse(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """MSE of the two maps after each sample's map is scaled to mean square 1: 2 (1 - cosine) per sample,
    blind to the two models' feature scales."""
    return F.mse_loss(unit_rms(student_feat.float()), unit_rms(teacher_feat.float()))


def similarity_mse(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """MSE between the batch's cosine-similarity matrices (B x B) of the two models' flattened maps: which
    images each model finds alike, blind to scale and to which channel holds what."""
    def sims(f):
        f = F.normalize(f.float().flatten(1), dim=1, eps=1e-12)
        return f @ f.t()
    return F.mse_loss(sims(student_feat), sims(teacher_feat))


# --feature-loss: mse is upstream's; the others are for two models whose feature spaces were never shared
FEATURE_LOSSES = {"mse": feature_mse, "normalised": normalised_mse, "similarity": similarity_mse}


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


class DistillLoss:
    """loss_fn for common.engine.train_one_epoch: CE(student) + alpha * MSE(student layer3, teacher layer3),
    the MSE one of FEATURE_LOSSES (default upstream's plain one; logged as feat_mse whichever it is).

    The teacher runs in eval mode under no_grad (no autograd graph, BN statistics untouched). The two terms
    are summed on the device (no host sync) for the epoch's log: `terms()` -> {"ce": .., "feat_mse": ..}.
    """

    def __init__(self, teacher: torch.nn.Module, alpha: float, feature_loss: str = "mse"):
        self.teacher, self.alpha = freeze(teacher), alpha
        self.feature_loss = FEATURE_LOSSES[feature_loss]
        self.sums = None

    def __call__(self, student, x, y):
        with torch.no_grad():
            _, teacher_feat = self.teacher(x)
        logits, student_feat = student(x)
        ce = F.cross_entropy(logits, y)
        feat = self.feature_loss(student_feat, teacher_feat)
        parts = torch.stack([ce.detach().double() * len(y), feat.detach().double() * len(y),
                             torch.tensor(float(len(y)), dtype=torch.float64, device=ce.device)])
        self.sums = parts if self.sums is None else self.sums + parts
        return ce + self.alpha * feat, logits

    def terms(self, reduce=lambda t: t) -> dict:
        if self.sums is None:
            return {}
        s = reduce(self.sums)
        return {"ce": (s[0] / s[2]).item(), "feat_mse": (s[1] / s[2]).item()}
