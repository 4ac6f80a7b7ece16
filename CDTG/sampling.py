"""Drawing tail-class images from a CDTG generator as CDTG/generate.py does: the real training images of a class
visited in a seeded shuffled order, each giving the tail model's layer3 feature for --per-real images,
z = r * n + (1 - r) * P(feature). Shared by CDTG/generate.py and train.py's quality tracking (CDTG/tracking.py).
"""
import os

import numpy as np
import torch
from tqdm import tqdm

from common.datasets import ImageList
from common.distributed import autocast
from common.errors import UserError
from common.layout import anno_path, read_classes
from common.transforms import classification
from CDTG.conditioning import fused_latents


def real_images_by_class(root: str, wanted: dict, size: int) -> dict:
    """{tail label: ImageList of the training images of class wanted[label], at the GAN size in [-1, 1]}."""
    transform = classification(size, False)
    num = len(read_classes(root)["names"])
    out = {}
    for k, cid in wanted.items():
        try:
            out[k] = ImageList(os.path.join(root, "train"), [anno_path(root, "train")], transform, num_classes=num,
                               label_map={cid: k})
        except UserError:
            raise UserError(f"class {cid} has no training image in {root}; is it the training run's data root?") \
                from None
    return out


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] -> uint8 HWC, as torchvision's save_image(normalize=True, value_range=(-1, 1))."""
    x = ((images.float().clamp(-1, 1) + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def visit_order(n: int, needed: int, seed: int) -> list:
    """Indices of real images to visit: seeded shuffles of range(n), concatenated until `needed` long."""
    gen = torch.Generator().manual_seed(seed)
    order = []
    while len(order) < needed:
        order += torch.randperm(n, generator=gen).tolist()
    return order[:needed]


@torch.no_grad()
def generate_class(k: int, images: ImageList, g, proj, tail, args, rt, mixing: float, mixing_rule: str,
                   save, progress: bool = True) -> tuple:
    """Generate args.n_per_class images of tail label k; save(index, uint8 image, source path)."""
    per_real = args.per_real
    reals_per_batch = max(1, args.batch_size // per_real)
    order = visit_order(len(images), -(-args.n_per_class // per_real), args.seed * 1000 + k)
    trunc_latent = g.mean_latent(4096, labels=k) if args.truncation < 1 else None
    count, first = 0, []
    bar = tqdm(total=args.n_per_class, desc=f"tail class {k}", leave=False, dynamic_ncols=True,
               disable=not progress)
    for start in range(0, len(order), reals_per_batch):
        idx = order[start: start + reals_per_batch]
        real = torch.stack([images[i][0] for i in idx]).to(rt.device)
        with autocast(rt, args.amp):
            _, feat = tail(real)
            projected = proj(feat.float()).repeat_interleave(per_real, 0)
            n = min(len(projected), args.n_per_class - count)
            projected = projected[:n]
            labels = torch.full((n,), k, dtype=torch.long, device=rt.device)
            fake, _ = g(fused_latents(projected, args.r, mixing, mixing_rule), labels,
                        truncation=args.truncation, truncation_latent=trunc_latent)
        pixels = to_uint8(fake)
        for j in range(n):
            save(count, pixels[j], images.samples[idx[j // per_real]][0])
            count += 1
        if len(first) < args.grid_cols:
            first.append(fake[: args.grid_cols - len(first)].float().cpu())
        bar.update(n)
        if count >= args.n_per_class:
            break
    bar.close()
    return count, torch.cat(first)[: args.grid_cols]
