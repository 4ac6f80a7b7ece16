"""DataLoaders with the speed habits (workers, pinned memory) and DistributedSampler under torchrun."""
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from common.distributed import Runtime


class ShardSampler(Sampler):
    """Every rank-th index, no padding: a distributed evaluation sees each sample exactly once."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def make_loader(dataset, batch_size: int, train: bool, rt: Runtime, workers: int, seed: int = 0,
                drop_last: bool = False, sampler: Sampler | None = None) -> DataLoader:
    """A given `sampler` (e.g. a class-balanced one, DDP-aware itself) replaces the default ones."""
    if sampler is None and rt.distributed and train:
        sampler = DistributedSampler(dataset, num_replicas=rt.world_size, rank=rt.rank, shuffle=True, seed=seed,
                                     drop_last=drop_last)
    elif sampler is None and rt.distributed:
        sampler = ShardSampler(len(dataset), rt.rank, rt.world_size)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=workers, pin_memory=rt.cuda, drop_last=drop_last,
                      persistent_workers=False)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    if hasattr(loader.sampler, "set_epoch"):  # DistributedSampler, Classification.longtail.ClassBalancedSampler
        loader.sampler.set_epoch(epoch)
