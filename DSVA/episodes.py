"""DSVA's torch data: the two transforms and the episodic batch sampler (images:
common.datasets.ImageList)."""
import sys

import numpy as np
import torch
from torch.utils.data import Sampler
from torchvision import transforms as T

from common.errors import UserError
from common.transforms import NORMALISATIONS


def normalisation(norm: str, clip_mean, clip_std) -> tuple:
    """'clip': the backbone's own mean/std (our default); 'imagenet': upstream's ImageNet statistics."""
    return (tuple(clip_mean), tuple(clip_std)) if norm == "clip" else NORMALISATIONS[norm]


def dsva_transform(size: int, train: bool, mean, std):
    """Upstream's 'normal' transforms scaled to the backbone's input: shorter side to size*256/224, then a
    random crop and horizontal flip (train) or a centre crop (test)."""
    steps = [T.Resize(round(size * 256 / 224))]
    steps += [T.RandomCrop(size), T.RandomHorizontalFlip(0.5)] if train else [T.CenterCrop(size)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(mean, std)])


# ---------------------------------------------------------------------------------------------- sampler

class EpisodeSampler(Sampler):
    """Batches of `ways` distinct classes x `shots` distinct images of each, `batches` per epoch.

    Deterministic for (seed, epoch): call set_epoch before iterating. A class with fewer than `shots` images
    is drawn with replacement (upstream would crash), with a warning.
    """

    def __init__(self, labels, ways: int, shots: int, batches: int, seed: int = 0):
        labels = np.asarray(labels)
        self.classes = sorted(int(c) for c in np.unique(labels))
        if ways > len(self.classes):
            raise UserError(f"--ways {ways} is more than the {len(self.classes)} training classes; lower "
                            "--ways")
        if ways < 1 or shots < 1 or batches < 1:
            raise UserError("--ways, --shots and --batches-per-epoch must be positive")
        self.by_class = {c: np.flatnonzero(labels == c) for c in self.classes}
        self.ways, self.shots, self.batches, self.seed, self.epoch = ways, shots, batches, seed, 0
        small = [c for c in self.classes if len(self.by_class[c]) < shots]
        if small:
            print(f"warning: {len(small)} training classes have fewer than {shots} images and are sampled "
                  f"with replacement (class ids {small[:10]})", file=sys.stderr)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return self.batches

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.batches):
            batch = []
            for c in rng.choice(self.classes, self.ways, replace=False):
                pool = self.by_class[int(c)]
                batch += [int(i) for i in rng.choice(pool, self.shots, replace=len(pool) < self.shots)]
            yield batch


def class_lookup(classes: list, num_classes: int) -> torch.Tensor:
    """Global class id -> position in `classes` (-1 elsewhere)."""
    lut = torch.full((num_classes,), -1, dtype=torch.long)
    lut[torch.tensor(classes, dtype=torch.long)] = torch.arange(len(classes))
    return lut
