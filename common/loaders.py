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
        sampler = DistributedSampler(dataset, num_replicas=rt.world_size, rank=rt.rank, shuffle=True,
                                     seed=seed, drop_last=drop_last)
    elif sampler is None and rt.distributed:
        sampler = ShardSampler(len(dataset), rt.rank, rt.world_size)
    if train and lone_last_batch(len(sampler) if sampler is not None else len(dataset), batch_size):
        # Training drops a last batch of ONE image (not folded into the previous batch): BatchNorm cannot
        # train on one value per channel (a 1x1 layer4 at 32 px) and one image gives noisy statistics at any
        # size. The shuffle puts another image there every epoch; other partial last batches are kept.
        drop_last = True
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=workers, pin_memory=rt.cuda, drop_last=drop_last,
                      persistent_workers=False)


def lone_last_batch(n: int, batch_size: int) -> bool:
    """Whether n samples in batches of batch_size end with a batch of one after at least one full batch."""
    return batch_size > 1 and n > batch_size and n % batch_size == 1


def set_epoch(loader: DataLoader, epoch: int) -> None:
    # DistributedSampler, common.samplers.ClassBalancedSampler
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
