"""CDTG's conditioning on the distilled tail model: the frozen tail classifier M_T, the projection P
of its layer3 features, and the fusion of P(feature) with noise, z = r * n + (1 - r) * P(feature);
`feature_cache` computes the frozen tail model's features of every real image once.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from CDTG.conv_shortcuts import use_conv_shortcuts
from common.errors import UserError
from common.part_model import load_part_model
from common.transforms import NORMALISATIONS


class TailClassifier(nn.Module):
    """The KMDN tail model, frozen and (unless `use_batch_statistics`) in eval mode, fed with images in [-1,
    1] of any size.

    Images are resized (differentiably) to `input_size` and converted to the model's normalisation, so
    gradients of its outputs reach the generator. forward -> (logits over the tail classes, layer3 features).
    """

    def __init__(self, model: nn.Module, meta: dict, input_size: int | None = None):
        super().__init__()
        self.batch_statistics = False
        self.channels_last = False
        self.model = model.eval().requires_grad_(False)
        self.meta = meta
        self.input_size = int(input_size or meta["img_size"])
        mean, std = NORMALISATIONS[meta.get("norm", "half")]
        # [-1, 1] -> [0, 1] -> (x - mean) / std; for 'half' this is the identity
        self.register_buffer("scale", 0.5 / torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift",
                             (0.5 - torch.tensor(mean)).view(1, 3, 1, 1) / torch.tensor(std).view(1, 3, 1, 1),
                             persistent=False)

    def train(self, mode: bool = True):  # fixed by `batch_statistics`, whatever the caller asks
        return super().train(self.batch_statistics)

    def use_batch_statistics(self, on: bool = True) -> "TailClassifier":
        """on: train mode for good, BatchNorm normalising with each batch's statistics (and updating its
        running ones), as the released CDTG code left the model; off (default): eval mode, the statistics
        never drift."""
        self.batch_statistics = on
        return self.train()

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False, antialias=images.shape[-1] > self.input_size)
        return images * self.scale + self.shift

    def forward(self, images: torch.Tensor):
        x = self.prepare(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def use_shortcuts(self) -> "TailClassifier":
        """The same outputs within float rounding, faster: CDTG.conv_shortcuts' convolutions, and the model's
        weights and inputs in channels-last order (oneDNN's faster layout on the CPU)."""
        use_conv_shortcuts(self.model)
        self.channels_last = True
        self.model.to(memory_format=torch.channels_last)
        return self

    @torch.no_grad()
    def feature_shape(self) -> tuple:
        """(channels, height, width) of layer3 at this input size."""
        device, training = self.scale.device, self.model.training
        self.model.eval()  # batch statistics of one image may not exist; the shape is the same
        _, feat = self.model(torch.zeros(1, 3, self.input_size, self.input_size, device=device))
        self.model.train(training)
        return tuple(feat.shape[1:])


def load_tail_model(path: str, device="cpu", input_size: int | None = None, split: dict | None = None
                    ) -> TailClassifier:
    """The distilled tail model file of KMDN (runs/kmdn/<ds>/distill/tail_model.pt) as a TailClassifier; with
    `split`, also the original's bare RModel_epoch_<e>.pth (classes in split.json's tail order)."""
    model, meta = load_part_model(path, device, split=split, part="tail" if split else None)
    if meta.get("part") != "tail":
        raise UserError(f"tail model {path} holds a {meta.get('part')} model; pass the distilled tail model "
                        f"(runs/kmdn/<dataset>/distill/tail_model.pt)")
    return TailClassifier(model, meta, input_size).to(device)


def check_tail_classes(meta: dict, split: dict, path: str) -> None:
    if list(meta["classes"]) != list(split["tail"]):
        raise UserError(f"tail model {path} was trained on classes {meta['classes']} but split.json's tail "
                        f"part is {split['tail']}; use the tail model of this data set and split")


class FeatureProjection(nn.Module):
    """P: layer3 features [B, C, H, W] -> [B, style_dim]; optionally adaptive-average-pooled to pool x pool
    first.

    pool = 0 keeps the full map (upstream: 1024 x 16 x 16 = 262,144 inputs, a 134M-parameter P). The Linear
    has PyTorch's default initialisation, as upstream's.

    normalise (not in the paper): the output rescaled to norm sqrt(style_dim), the expected norm of the noise
    n, so that a trained P cannot outgrow the noise in z = r n + (1 - r) P(feature) and r stays the noise's
    share.
    """

    def __init__(self, feature_shape, style_dim: int, pool: int = 0, normalise: bool = False):
        super().__init__()
        c, h, w = feature_shape
        self.feature_shape = tuple(int(v) for v in feature_shape)
        self.pool = int(pool)
        self.style_dim = style_dim
        self.normalise = bool(normalise)
        self.linear = nn.Linear(c * (self.pool ** 2 if self.pool else h * w), style_dim)

    def config(self) -> dict:
        """What rebuilds it (generator.pt's meta); `normalise` only when on, so older files read the same."""
        out = {"feature_shape": list(self.feature_shape), "style_dim": self.style_dim, "pool": self.pool}
        return {**out, "normalise": True} if self.normalise else out

    def reduce(self, feat3: torch.Tensor) -> torch.Tensor:
        """The input of the Linear, before flattening: the pooled map (or the map itself when pool = 0).

        Pooling is idempotent, so forward() also accepts maps reduced here (e.g. a cache of them)."""
        c, h, w = self.feature_shape
        shape = tuple(feat3.shape[1:])
        if shape != (c, h, w) and not (self.pool and shape == (c, self.pool, self.pool)):
            raise ValueError(f"P expects layer3 features of shape {self.feature_shape}, got {shape}")
        return F.adaptive_avg_pool2d(feat3, self.pool) if self.pool else feat3

    def forward(self, feat3: torch.Tensor) -> torch.Tensor:
        out = self.linear(self.reduce(feat3).flatten(1).to(self.linear.weight.dtype))
        return F.normalize(out, dim=1) * self.style_dim ** 0.5 if self.normalise else out


def fuse(projected: torch.Tensor, r: float, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One fused latent r * n + (1 - r) * P(feature), n ~ N(0, I) (drawn here unless given)."""
    return r * (torch.randn_like(projected) if noise is None else noise) + (1 - r) * projected


def fused_latents(projected: torch.Tensor, r: float, mixing: float, rule: str = "always",
                  noises: list | None = None) -> list:
    """The generator's input styles: two fused latents (style mixing) or one.

    rule 'always' (TGN): two whenever mixing > 0; 'probabilistic' (rosinality): two with
    probability `mixing`. `noises`: the n of each latent, given instead of drawn (their count decides).
    """
    if rule not in ("always", "probabilistic"):
        raise ValueError(f"mixing rule must be 'always' or 'probabilistic', got {rule!r}")
    if noises is not None:
        return [fuse(projected, r, n) for n in noises]
    two = mixing > 0 and (rule == "always" or float(torch.rand(())) < mixing)
    return [fuse(projected, r) for _ in range(2 if two else 1)]


@torch.no_grad()
def feature_cache(trainer, dataset, rt, hflip: bool, limit_gb: float, batch: int, workers: int):
    """[2 if hflip else 1, N, ...] reduced features of every real image (and of its mirror), as a
    CDTGTrainer's `features` gives them, or None if too big."""
    c, h, w = trainer.proj.feature_shape
    pool = trainer.proj.pool
    per_image = c * (pool * pool if pool else h * w) * 4 * (2 if hflip else 1)
    if trainer.tail.batch_statistics:  # --mode code: features depend on the batch they are computed in
        return None
    if limit_gb <= 0 or per_image * len(dataset) > limit_gb * 1e9:
        return None
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=workers, pin_memory=rt.cuda,
                        generator=torch.Generator())  # its worker seed must not draw from the global RNG
    views = [[] for _ in range(2 if hflip else 1)]
    for images, _ in tqdm(loader, desc="tail-model features", leave=False, disable=not rt.is_main):
        images = images.to(rt.device, non_blocking=True)
        views[0].append(trainer.features(images))
        if hflip:
            views[1].append(trainer.features(images.flip(3)))
    return torch.stack([torch.cat(v) for v in views])
