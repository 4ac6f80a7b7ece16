"""CDTG's losses (SPEC 3.3, 3.4): StyleGAN2's adversarial recipe and the two class-consistency terms.

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
                        decay: float = 0.01):
    """StyleGAN2's path-length regulariser.

    J^T y for y ~ N(0, I)/sqrt(H W), per sample the norm over style dims averaged over the n_latent copies;
    penalty = mean (length - a)^2 with a the running mean (updated here with `decay`).
    Returns (penalty, new running mean (detached), per-sample lengths (detached)).
    """
    noise = torch.randn_like(fake_img) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    grad, = torch.autograd.grad((fake_img * noise).sum(), latents, create_graph=True)
    lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))
    new_mean = mean_path_length + decay * (lengths.mean().detach() - mean_path_length)
    penalty = (lengths - new_mean).pow(2).mean()
    return penalty, new_mean.detach(), lengths.detach()


def classifier_consistency_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_cls = CE(M_T(G(z, y)), y) (logits of the frozen tail classifier)."""
    return F.cross_entropy(logits.float(), labels)


def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * cos(image, prompt_k) for L2-normalised features: [B, K]."""
    return scale * image_features.float() @ text_features.float().t()


def clip_consistency_loss(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                          scale: float) -> torch.Tensor:
    """L_clip = CE(scale * cos(E_I(G), E_T(prompts)), y): cross-entropy on the logits (no double softmax)."""
    return F.cross_entropy(clip_logits(image_features, text_features, scale), labels)
