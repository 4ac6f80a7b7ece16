"""The real-image batches of CDTG/train.py: batch b depends only on (seed, b), so a resumed run sees exactly
the batches a straight run would. An endless shuffle (upstream), class-balanced draws, or class groups."""
import torch
from torch.utils.data import Dataset, Sampler

from common.errors import UserError
from common.samplers import ClassBalancedSampler


class Indexed(Dataset):
    """(image, label, index) of an ImageList, so that cached features can be looked up. With `keep`, each item
    is read and transformed once and then kept in memory (for a deterministic transform)."""

    def __init__(self, base, keep: bool = False):
        self.base, self.kept = base, {} if keep else None

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if self.kept is None:
            image, label = self.base[i]
        else:
            if i not in self.kept:
                self.kept[i] = self.base[i]
            image, label = self.kept[i]
        return image, label, i


class EndlessBatches(Sampler):
    """Batch b of an endless seeded shuffle (drop_last), starting at batch `start`: the data order of an
    iteration depends only on (seed, iteration), so a resumed run sees exactly the batches a straight run
    would."""

    def __init__(self, n: int, batch: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.start, self.rank, self.world = n, batch, seed, start, rank, world
        self.per_epoch = n // (batch * world)
        if self.per_epoch == 0:
            raise UserError(f"only {n} tail training images for a batch of {batch} x {world} process(es); "
                            f"lower --batch-size")

    def __iter__(self):
        b, epoch, perm = self.start, None, None
        while True:
            e, k = divmod(b, self.per_epoch)
            if e != epoch:
                gen = torch.Generator().manual_seed(self.seed * 100003 + e)
                epoch, perm = e, torch.randperm(self.n, generator=gen)
            offset = (k * self.world + self.rank) * self.batch
            yield perm[offset: offset + self.batch].tolist()
            b += 1


class BalancedBatches(EndlessBatches):
    """Batch b drawn with replacement so that every class is equally likely (then any of its images): rare
    tail classes get as many generator updates as common ones. Batch b is epoch b of common.samplers'
    ClassBalancedSampler (Classification's --sampler class_balanced), B x world draws long, this process
    keeping its share: it depends only on (seed, b), as EndlessBatches."""

    def __init__(self, labels: list, batch: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        super().__init__(len(labels), batch, seed, start, rank, world)
        self.sampler = ClassBalancedSampler(labels, seed, rank, world, num_samples=batch * world)

    def __iter__(self):
        b = self.start
        while True:
            self.sampler.set_epoch(b)
            yield list(self.sampler)
            b += 1


class ClassGroupedBatches(EndlessBatches):
    """Batch b as groups of one class each: sample n belongs to group n mod (B / G), G = the
    discriminator's minibatch-stddev group (4, or the largest divisor of B below it), as
    CDTG.ops.minibatch_stddev groups them. The group's classes are drawn uniformly without replacement, its
    images from the class without replacement where it has G. So D's stddev feature measures the spread within
    one class, where a generator that gives one image per class has none (in a class-balanced batch every
    group mixes classes). Not in the paper. Seeded by (seed, batch)."""

    def __init__(self, labels: list, batch: int, seed: int, start: int = 0, rank: int = 0, world: int = 1,
                 group_size: int = 4):
        super().__init__(len(labels), batch, seed, start, rank, world)
        group = min(group_size, batch)
        while batch % group:
            group -= 1
        self.group, self.groups = group, batch // group
        labels = torch.tensor(labels)
        self.by_class = [torch.nonzero(labels == k).flatten() for k in range(int(labels.max()) + 1)]
        self.by_class = [idx for idx in self.by_class if len(idx)]

    def __iter__(self):
        b = self.start
        while True:
            gen = torch.Generator().manual_seed(self.seed * 100003 + b)
            batches = []
            for _ in range(self.world):
                n_classes = len(self.by_class)
                picks = torch.cat([torch.randperm(n_classes, generator=gen)
                                   for _ in range(-(-self.groups // n_classes))])[: self.groups]
                batch = [0] * self.batch
                for j, k in enumerate(picks.tolist()):
                    idx = self.by_class[k]
                    take = torch.randperm(len(idx), generator=gen)[: self.group] if len(idx) >= self.group \
                        else torch.randint(len(idx), (self.group,), generator=gen)
                    for m, t in enumerate(take.tolist()):
                        batch[m * self.groups + j] = int(idx[t])
                batches.append(batch)
            yield batches[self.rank]
            b += 1
