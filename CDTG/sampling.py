"""Drawing tail-class images from a CDTG generator as CDTG/generate.py does: the real training images of a
class visited in a seeded shuffled order, each giving the tail model's layer3 feature for --per-real images,
z = r * n + (1 - r) * P(feature). Shared by CDTG/generate.py and train.py's quality tracking
(CDTG/tracking.py).
"""
import os

import numpy as np
import torch
from tqdm import tqdm

from CDTG.conditioning import fused_latents
from common.datasets import ImageList
from common.distributed import amp_dtype, autocast
from common.errors import UserError, batch_loop
from common.layout import anno_path, read_classes
from common.transforms import classification


def real_images_by_class(root: str, wanted: dict, size: int) -> dict:
    """{tail label: ImageList of the training images of class wanted[label], at the GAN size in [-1, 1]}."""
    transform = classification(size, False)
    num = len(read_classes(root)["names"])
    out = {}
    for k, cid in wanted.items():
        try:
            out[k] = ImageList(os.path.join(root, "train"), [anno_path(root, "train")], transform,
                               num_classes=num, label_map={cid: k})
        except UserError:
            raise UserError(f"class {cid} has no training image in {root}; is it the training run's data "
                            "root?") \
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


def draw_generator(*keys: int) -> torch.Generator:
    """A CPU random generator seeded from `keys` (e.g. seed, tail label, image index): the same keys give the
    same numbers in any process, whatever was drawn before."""
    words = [int(k) % 2 ** 64 for k in keys]
    return torch.Generator().manual_seed(int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]))


def image_draws(g, mixing: float, mixing_rule: str, seed: int, k: int, indices) -> tuple:
    """The random numbers of images `indices` of tail label k, each from its own generator (seed, k, index),
    so that an image does not depend on the batch it is drawn in: ([n of latent 1, n of latent 2], per-image
    index where latent 2 takes over (n_latent: never), noise images per synthesis layer), stacked over the
    images."""
    z1, z2, inject, noise = [], [], [], []
    shapes = [tuple(getattr(g.noises, f"noise_{i}").shape[1:]) for i in range(g.num_layers)]
    for i in indices:
        gen = draw_generator(1, seed, k, i)
        z = torch.randn(2, g.style_dim, generator=gen)
        coin = float(torch.rand((), generator=gen))
        two = mixing > 0 and (mixing_rule == "always" or coin < mixing)
        index = int(torch.randint(1, g.n_latent, (), generator=gen))
        z1.append(z[0])
        z2.append(z[1])
        inject.append(index if two else g.n_latent)
        noise.append([torch.randn(shape, generator=gen) for shape in shapes])
    return [torch.stack(z1), torch.stack(z2)], torch.tensor(inject), [torch.stack(n) for n in zip(*noise)]


def class_mean_latent(g, k: int, seed: int, n: int = 4096) -> torch.Tensor:
    """The mean w of tail label k over n noise-only latents (truncation's centre), drawn from (seed, k)."""
    device = g.input.input.device
    z = torch.randn(n, g.style_dim, generator=draw_generator(2, seed, k)).to(device)
    return g.get_latent(z, torch.full((n,), k, dtype=torch.long, device=device)).mean(0, keepdim=True)


def styles_of(g, projected: torch.Tensor, labels: torch.Tensor, r: float, noises: list, inject: torch.Tensor,
              truncation: float, truncation_latent) -> torch.Tensor:
    """Per-image w+ [B, n_latent, style_dim]: w of latent 1 before each image's `inject` index, of latent 2
    from it (style mixing at a point of its own for every image), truncated towards `truncation_latent` if <
    1."""
    w1, w2 = (g.get_latent(z, labels) for z in fused_latents(projected, r, 1.0, "always", noises))
    if truncation < 1:
        w1, w2 = (truncation_latent + truncation * (w - truncation_latent) for w in (w1, w2))
    first = torch.arange(g.n_latent, device=w1.device)[None, :, None] < inject.to(w1.device)[:, None, None]
    return torch.where(first, w1[:, None], w2[:, None])


@batch_loop("generation")
@torch.no_grad()
def generate_class(k: int, images: ImageList, g, proj, tail, args, rt, mixing: float, mixing_rule: str,
                   save, progress: bool = True, done=None) -> tuple:
    """Generate args.n_per_class images of tail label k; save(index, uint8 image, source path) for each index
    not in `done`. Image i is drawn from (args.seed, k, i) and from the real image visited for it, in batches
    of the same images whatever `done` holds, so it is the same in a run that continues an interrupted one.
    Returns (count, the first args.grid_cols images as tensors, the source path of every image)."""
    done = done or set()
    per_real = args.per_real
    per_batch = max(1, args.batch_size // per_real) * per_real
    order = visit_order(len(images), -(-args.n_per_class // per_real), args.seed * 1000 + k)
    sources = [images.samples[order[i // per_real]][0] for i in range(args.n_per_class)]
    trunc_latent = class_mean_latent(g, k, args.seed) if args.truncation < 1 else None
    noise_dtype = amp_dtype(rt) if args.amp and rt.cuda else torch.float32
    first, grid_images = [], min(args.grid_cols, args.n_per_class)
    bar = tqdm(total=args.n_per_class, desc=f"tail class {k}", leave=False, dynamic_ncols=True,
               disable=not progress)
    for start in range(0, args.n_per_class, per_batch):
        indices = range(start, min(start + per_batch, args.n_per_class))
        # the first images are drawn for the grid
        if start >= grid_images and all(i in done for i in indices):
            bar.update(len(indices))
            continue
        reals = order[start // per_real: indices[-1] // per_real + 1]
        real = torch.stack([images[i][0] for i in reals]).to(rt.device)
        noises, inject, noise_maps = image_draws(g, mixing, mixing_rule, args.seed, k, indices)
        with autocast(rt, args.amp):
            _, feat = tail(real)
            projected = proj(feat.float()).repeat_interleave(per_real, 0)[: len(indices)]
            labels = torch.full((len(indices),), k, dtype=torch.long, device=rt.device)
            styles = styles_of(g, projected, labels, args.r, [n.to(rt.device) for n in noises], inject,
                               args.truncation, trunc_latent)
            fake, _ = g(styles, input_is_latent=True,
                        noise=[m.to(rt.device, noise_dtype, non_blocking=True) for m in noise_maps])
        pixels = to_uint8(fake)
        for j, i in enumerate(indices):
            if i not in done:
                save(i, pixels[j], sources[i])
        if start < grid_images:
            first.append(fake[: grid_images - start].float().cpu())
        bar.update(len(indices))
    bar.close()
    return args.n_per_class, torch.cat(first), sources
