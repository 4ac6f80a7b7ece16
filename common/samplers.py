"""The one class-balanced sampler: Classification's `--sampler class_balanced` (an epoch of draws, resumed at
an epoch by set_epoch) and CDTG's `--class-balanced` (CDTG.batches.BalancedBatches: batch b is "epoch" b of a
batch-long sampler, so a run resumed at an iteration draws what a straight run would)."""
import math

import numpy as np
from torch.utils.data import Sampler


class ClassBalancedSampler(Sampler):
    """Each draw picks a class uniformly among those with images, then an image of it uniformly (with
    replacement); an epoch has as many draws as the data set has images (or num_samples). Under DDP every
    rank draws the same seeded global sequence and keeps every world_size-th draw, so the ranks' shares are
    disjoint and together class-balanced. The draws depend only on (seed, epoch); set_epoch(e) reseeds, as
    DistributedSampler does."""

    def __init__(self, targets, seed: int = 0, rank: int = 0, world_size: int = 1,
                 num_samples: int | None = None):
        targets = np.asarray(targets, dtype=np.int64)
        self.by_class = [np.flatnonzero(targets == c) for c in np.unique(targets)]
        self.total = num_samples or len(targets)
        self.total = math.ceil(self.total / world_size) * world_size
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draws(self) -> np.ndarray:
        """The global sequence of the epoch (every rank's draws)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        classes = rng.integers(len(self.by_class), size=self.total)
        picks = rng.random(self.total)
        sizes = np.array([len(ix) for ix in self.by_class])
        within = (picks * sizes[classes]).astype(np.int64)
        return np.array([self.by_class[c][i] for c, i in zip(classes, within)], dtype=np.int64)

    def __iter__(self):
        return iter(self.draws()[self.rank::self.world_size].tolist())

    def __len__(self):
        return self.total // self.world_size
