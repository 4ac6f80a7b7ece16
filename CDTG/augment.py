"""Differentiable augmentation for the discriminator, for tail classes with few images (upstream's --augment).

ADA-lite: DiffAugment's differentiable operations (integer translation with zero padding, brightness,
saturation, contrast, cutout) applied to each sample independently with probability p, where p is either fixed
or tuned by ADA's overfitting heuristic r_t = E[sign(D(real))] (raise p while r_t > target, lower it
otherwise). Upstream's ADA (rosinality's, from StyleGAN2-ADA) uses a richer pipeline of geometric and colour
transforms; this one keeps ADA's schedule but DiffAugment's cheaper operations. With p = 1 it is plain
DiffAugment.

Every operation is differentiable w.r.t. the image, so R1 can be taken w.r.t. the un-augmented real image
(as upstream) and G receives gradients through the augmentation of its samples. Randomness comes from the
torch generator of the image's device, so it is captured by checkpointed RNG state.
"""
import torch
import torch.nn.functional as F

OPERATIONS = ("translation", "brightness", "saturation", "contrast", "cutout")


def _chosen(x: torch.Tensor, p: float) -> torch.Tensor:
    """A [B, 1, 1, 1] 0/1 mask: which samples get the operation."""
    return (torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p).to(x.dtype)


def translate(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each sample by a random integer offset of up to ratio * size pixels per axis, zero padded."""
    b, _, h, w = x.shape
    sh, sw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    ty = torch.randint(-sh, sh + 1, (b, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1), device=x.device)
    padded = F.pad(x, [sw, sw, sh, sh])
    rows = torch.arange(h, device=x.device)[None] + sh - ty  # [B, H]: source row of each output row
    cols = torch.arange(w, device=x.device)[None] + sw - tx
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # [B, H, W, C] -> BCHW


def brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)


def saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(1, keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean


def contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean([1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero a square of ratio * size at a random position (clipped at the border) in each sample."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    top, left = cy - ch // 2, cx - cw // 2
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_OPS = {"translation": translate, "brightness": brightness, "saturation": saturation, "contrast": contrast,
        "cutout": cutout}


def augment(x: torch.Tensor, p: float, operations=OPERATIONS) -> torch.Tensor:
    """Apply each operation to each sample with probability p (p = 0: x unchanged, no random numbers
    drawn)."""
    if p <= 0:
        return x
    for name in operations:
        mask = _chosen(x, p)
        x = mask * _OPS[name](x) + (1 - mask) * x
    return x


class AdaptiveAugment:
    """ADA's schedule for p: every `every` iterations, p += sign(r_t - target) * images_seen / length.

    fixed_p > 0 keeps p constant. `observe(real_pred)` accumulates sign(D(real)) on the device (no host sync);
    `step()` (once per iteration) updates p at the interval; reduce(t) sums across processes under DDP.
    """

    def __init__(self, target: float = 0.6, length: int = 500_000, every: int = 256, fixed_p: float = 0.0,
                 operations=OPERATIONS, reduce=lambda t: t):
        unknown = [o for o in operations if o not in _OPS]
        if unknown:
            raise ValueError(f"unknown augmentation {unknown}; choose from {OPERATIONS}")
        self.target, self.length, self.every = target, length, every
        self.fixed = fixed_p > 0
        self.p = float(fixed_p)
        self.operations = tuple(operations)
        self.reduce = reduce
        self.stats = None  # [sum of signs, count]
        self.calls = 0
        self.r_t = 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return augment(x, self.p, self.operations)

    def observe(self, real_pred: torch.Tensor) -> None:
        if self.fixed:
            return
        s = torch.stack([torch.sign(real_pred.detach().float()).sum(),
                         torch.tensor(float(real_pred.numel()), device=real_pred.device)])
        self.stats = s if self.stats is None else self.stats.to(s.device) + s

    def step(self) -> None:
        if self.fixed:
            return
        self.calls += 1
        if self.calls % self.every or self.stats is None:
            return
        total, count = self.reduce(self.stats).tolist()
        self.r_t = total / max(count, 1.0)
        sign = (self.r_t > self.target) - (self.r_t < self.target)
        self.p = min(1.0, max(0.0, self.p + sign * count / self.length))
        self.stats = None

    def state_dict(self) -> dict:
        return {"p": self.p, "calls": self.calls, "r_t": self.r_t,
                "stats": None if self.stats is None else self.stats.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.p, self.calls, self.r_t = state["p"], state["calls"], state["r_t"]
        self.stats = state["stats"]
