"""CDTG's losses: StyleGAN2's adversarial recipe and the two class-consistency terms.

Adversarial: non-saturating logistic loss for G, logistic loss for D, lazy R1 on real images and path-length
regularisation of G. Consistency (the paper's objective, computed with gradients): cross-entropy of the frozen
tail classifier on generated images, and cross-entropy of CLIP's scaled cosine logits between generated images
and the tail classes' text prompts.
"""
import math

import torch
import torch.nn.functional as F


def d_logistic_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    """softplus(-D(real)) + softplus(D(fake)), each averaged over the batch."""
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def g_nonsaturating_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    """softplus(-D(G(z)))."""
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred: torch.Tensor, real_img: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 over real images (real_img must require grad); differentiable (create_graph)."""
    grad, = torch.autograd.grad(real_pred.float().sum(), real_img, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


def path_length_penalty(fake_img: torch.Tensor, latents: torch.Tensor, mean_path_length: torch.Tensor,
                        decay: float = 0.01, noise: torch.Tensor | None = None, detach_mean: bool = True):
    """StyleGAN2's path-length regulariser.

    J^T y for y ~ N(0, I)/sqrt(H W), per sample the norm over style dims averaged over the n_latent copies;
    penalty = mean (length - a)^2 with a the running mean (updated here with `decay`). `noise`: y's N(0, I)
    draw, given instead of drawn. detach_mean=False differentiates a through this batch's lengths too, as
    StyleGAN2's code does (about 1 % of the gradient at decay 0.01).
    Returns (penalty, new running mean (detached), per-sample lengths (detached)).
    """
    noise = torch.randn_like(fake_img) if noise is None else noise
    noise = noise / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    grad, = torch.autograd.grad((fake_img * noise).sum(), latents, create_graph=True)
    lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))
    batch_mean = lengths.mean().detach() if detach_mean else lengths.mean()
    new_mean = mean_path_length + decay * (batch_mean - mean_path_length)
    penalty = (lengths - new_mean).pow(2).mean()
    return penalty, new_mean.detach(), lengths.detach()


def classifier_consistency_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_cls = CE(M_T(G(z, y)), y) (logits of the frozen tail classifier)."""
    return F.cross_entropy(logits.float(), labels)


def feature_match_loss(fake_feat: torch.Tensor, real_feat: torch.Tensor) -> torch.Tensor:
    """||f(G) - f(x)||^2 / ||f(x)||^2 per image, averaged: how far the tail model's features of a generated
    image lie from those of the real image it was conditioned on, relative to the latter's size (0: the same
    features, 1: all-zero features)."""
    diff = (fake_feat.float() - real_feat.float()).flatten(1).pow(2).sum(1)
    return (diff / real_feat.float().flatten(1).pow(2).sum(1).clamp_min(1e-12)).mean()


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * cos(image, prompt_k) for L2-normalised features: [B, K]."""
    return scale * image_features.float() @ text_features.float().t()


def clip_consistency_loss(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                          scale: float, double_softmax: bool = False) -> torch.Tensor:
    """L_clip = CE(scale * cos(E_I(G), E_T(prompts)), y): cross-entropy on the logits; double_softmax=True
    feeds it softmax probabilities instead, as the released code does."""
    logits = clip_logits(image_features, text_features, scale)
    return F.cross_entropy(logits.softmax(1) if double_softmax else logits, labels)


def wrapped_bytes(images: torch.Tensor) -> torch.Tensor:
    """`images.mul(255).byte()` as the released code casts raw generator output (no de-normalising) with
    torch on the CPU: truncation towards zero, then modulo 256, so out-of-range values wrap (-0.5 -> 129).
    Written out so that it is the same on every device ([B, 3, H, W] float -> uint8)."""
    return torch.remainder(images.float().mul(255).trunc().to(torch.int64), 256).to(torch.uint8)


def released_clip_input(preprocess, images: torch.Tensor) -> torch.Tensor:
    """The released CLIP term's image path: wrapped bytes -> PIL images -> CLIP's own PIL preprocessing
    (bicubic resize, centre crop, CLIP mean/std) -> [B, 3, S, S]. Not differentiable."""
    from PIL import Image
    arrays = wrapped_bytes(images.detach()).permute(0, 2, 3, 1).cpu().numpy()
    return torch.stack([preprocess(Image.fromarray(a)) for a in arrays]).to(images.device)


def lowpass(images: torch.Tensor) -> torch.Tensor:
    """The [1, 2, 1] x [1, 2, 1] / 16 blur per channel (edges replicated). Its frequency response is 0 at the
    Nyquist frequency and, away from the edges, it is its own adjoint: a loss of lowpass(x) sends x no 2-pixel
    checkerboard gradient."""
    k = torch.tensor([1.0, 2.0, 1.0], device=images.device, dtype=images.dtype)
    k = (k[:, None] * k[None, :] / 16).expand(images.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), k, groups=images.shape[1])


def reconstruction_loss(fake: torch.Tensor, real: torch.Tensor, blur: bool = True) -> torch.Tensor:
    """Mean |lowpass(G) - lowpass(x)| over pixels and channels: a generated image against the real image whose
    features conditioned it, both blurred so that the term asks for the layout, not the 2-pixel detail; with
    blur off, mean |G - x|, which also ties the frequencies the blur removes (a 2-pixel checkerboard)."""
    fake, real = fake.float(), real.float()
    if blur:
        fake, real = lowpass(fake), lowpass(real)
    return (fake - real).abs().mean()


def spectral_shares(images: torch.Tensor) -> torch.Tensor:
    """Per image (B, H, W): the share of its spectral power (grey, mean removed) at each frequency of the
    unshifted 2-D FFT."""
    grey = images.float().mean(1)
    grey = grey - grey.mean((-2, -1), keepdim=True)
    power = torch.fft.fft2(grey).abs().square()
    return power / power.sum((-2, -1), keepdim=True).clamp_min(1e-12)


def lattice_shares(images: torch.Tensor) -> torch.Tensor:
    """Per image: the share of its spectral power (grey, mean removed) at the frequencies whose indices are
    both multiples of a quarter of the size, i.e. periods of 2 and 4 pixels, where the checkerboards and
    lattices of strided up-sampling sit and smooth images have little; NaN where a side is not a multiple of
    4."""
    h, w = images.shape[-2:]
    if h % 4 or w % 4:
        return torch.full((len(images),), float("nan"))
    # the zero frequency holds nothing after the mean
    return spectral_shares(images)[:, :: h // 4, :: w // 4].sum((-2, -1))


def high_frequencies(h: int, w: int, period: float = 8.0) -> torch.Tensor:
    """(H, W) mask of the FFT's frequencies with a period of `period` pixels or less along either axis."""
    fy = torch.fft.fftfreq(h).abs()[:, None]
    fx = torch.fft.fftfreq(w).abs()[None, :]
    return torch.maximum(fy, fx) >= 1 / period


def spectral_excess(fake_shares: torch.Tensor, real_shares: torch.Tensor,
                    tolerance: float = 2.0) -> torch.Tensor:
    """Summed over the frequencies with periods of 8 pixels or less: how far the generated images' mean power
    share at each frequency (`fake_shares`, B x H x W) rises above `tolerance` times the real images' (H x W):
    a peak that the real images lack, wherever it sits; below the tolerance, no penalty (the batch's own
    spread)."""
    mask = high_frequencies(*real_shares.shape[-2:]).to(real_shares.device)
    return F.relu(fake_shares.mean(0) - tolerance * real_shares)[mask].sum()


def mode_seeking_loss(fake: torch.Tensor, styles: list, eps: float = 1e-5) -> torch.Tensor:
    """The mode-seeking term of MSGAN (Mao et al., CVPR 2019), not in the paper: a batch whose halves share
    class and feature, with other noise; the ratio of the halves' mean absolute image difference to their
    latents' (`styles`: the generator's one or two input latents), and 1 / (ratio + eps) to minimise."""
    h = fake.shape[0] // 2
    image = (fake[:h] - fake[h: 2 * h]).float().abs().mean()
    z = torch.cat([s[:h] - s[h: 2 * h] for s in styles], 1).float().abs().mean()
    return 1 / (image / z + eps)
