"""DSVA's training objective.

    L = xe * CE(global) + attri * MSE(a_g, a_y) + l_xe * CE(local) + l_attri * MSE(a_l, a_y)
        + cpt * CPT(attention)                       (only after the prototype-only epochs)
        + sum over attribute groups G of  l_regular * ||P[G]||_F + regular * ||W_ALE[G]||_F

Upstream applies cross-entropy to class scores that are already softmax probabilities (a "double softmax",
inherited from APN): reproduced by default, `double_softmax=False` (--logits-ce) uses the logits.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossWeights:
    xe: float = 1.0  # global compatibility
    attri: float = 1e-2  # global regression
    l_xe: float = 1.0  # local compatibility
    l_attri: float = 8e-2  # local regression
    cpt: float = 1e-9  # attention concentration
    regular: float = 0.0  # group lasso on the ALE weights
    l_regular: float = 0.0  # group lasso on the prototypes


def class_ce(logits: torch.Tensor, target: torch.Tensor, double_softmax: bool = True) -> torch.Tensor:
    """Cross-entropy of class scores; upstream feeds softmax(logits) to a cross-entropy that applies its
    own."""
    logits = logits.float()
    return F.cross_entropy(logits.softmax(1) if double_softmax else logits, target)


def attention_concentration(attention: torch.Tensor) -> torch.Tensor:
    """CPT: sum over images, attributes and cells of sigmoid(M) * squared grid distance to the map's peak."""
    b, k, g, _ = attention.shape
    flat = attention.reshape(b, k, g * g)
    peak = flat.argmax(2)  # [B, K]
    rows = torch.arange(g, device=attention.device).repeat_interleave(g)  # cell -> row
    cols = torch.arange(g, device=attention.device).repeat(g)
    dist = ((rows.view(1, 1, -1) - (peak // g).unsqueeze(2)) ** 2
            + (cols.view(1, 1, -1) - (peak % g).unsqueeze(2)) ** 2)
    return (torch.sigmoid(flat) * dist.to(flat.dtype)).sum()


def group_lasso(weight: torch.Tensor, groups: list, eps: float = 1e-8) -> torch.Tensor:
    """sum_G sqrt(sum_{k in G, d} w[k, d]^2 + D * eps): rows of `weight` [attributes, D] are attributes."""
    return sum(((weight[ids] ** 2).sum(0) + eps).sum().sqrt() for ids in groups)


def dsva_loss(out: dict, target: torch.Tensor, target_attributes: torch.Tensor, model, weights: LossWeights,
              concentrate: bool, double_softmax: bool = True) -> tuple:
    """(total loss, {term: detached tensor}) for one batch. target: positions among the training classes;
    target_attributes: [B, K] attribute vectors of the targets; `concentrate` switches on the CPT term."""
    parts = {
        "xe": weights.xe * class_ce(out["global"], target, double_softmax),
        "attri": weights.attri * F.mse_loss(out["global_attr"].float(), target_attributes),
        "l_xe": weights.l_xe * class_ce(out["local"], target, double_softmax),
        "l_attri": weights.l_attri * F.mse_loss(out["local_attr"].float(), target_attributes),
    }
    if concentrate and weights.cpt > 0:
        parts["cpt"] = weights.cpt * attention_concentration(out["attention"].float())
    if weights.l_regular > 0:
        parts["l_regular"] = weights.l_regular * group_lasso(model.prototypes, model.groups)
    if weights.regular > 0:
        parts["regular"] = weights.regular * group_lasso(model.ale.weight, model.groups)
    total = sum(parts.values())
    return total, {k: v.detach() for k, v in parts.items()}
