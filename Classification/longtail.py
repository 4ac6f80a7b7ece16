"""Standard long-tail baselines beside the TGN classifier: re-sampling, re-weighted and margin losses,
post-hoc adjustments. Every default elsewhere stays upstream's plain cross-entropy with instance sampling.

- class-balanced sampling: a class drawn uniformly, then an image of it (Kang et al. 2020, "class-balanced";
  common.samplers.ClassBalancedSampler, shared with CDTG);
- class-balanced loss: weight (1 - beta) / (1 - beta^n_y), normalised to sum to C (Cui et al. 2019);
- Balanced Softmax: cross-entropy on logits + log prior (Ren et al. 2020);
- LDAM: margin C / n_j^(1/4) on the true class, largest margin max_margin, scale s on cosine logits; with
  deferred re-weighting (DRW) by the class-balanced weights from a given epoch (Cao et al. 2019). DRW takes
  the weighted mean sum_i w_yi l_i / sum_i w_yi, as the reference's cross-entropy with class weights does;
  "batch" divides by the batch size instead (this repository's earlier rule). DRW applies to ce, ldam and
  balanced_softmax;
- post-hoc logit adjustment: logits - tau * log prior, tau = 1 (Menon et al. 2021, their post-hoc default);
- tau-normalisation: each class weight vector divided by its norm^tau, tau in [0, 2] as the reference sweeps
  it (Kang et al. 2020); cRT is Classification/crt.py.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.engine import logits_of
from common.errors import UserError

LOSSES = ("ce", "cb", "balanced_softmax", "ldam")
SAMPLERS = ("instance", "class_balanced")
DRW_NORMALISATIONS = ("weighted_mean", "batch")
TAU_NORM_RANGE = (0.0, 2.0)


def class_counts_of(targets, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes)


def log_prior(counts) -> torch.Tensor:
    """log(n_j / N); a class with no training image gets log(1/N^2) rather than -inf (finite adjustments)."""
    c = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    n = c.sum()
    return torch.log(torch.where(c > 0, c, 1 / n) / n).float()


def effective_number_weights(counts, beta: float) -> torch.Tensor:
    """Cui et al.: w_j proportional to (1 - beta) / (1 - beta^n_j), scaled so that sum_j w_j = C."""
    if not 0 <= beta < 1:
        raise UserError(f"--cb-beta must be in [0, 1), got {beta}")
    c = np.maximum(np.asarray(counts, dtype=np.float64), 1)
    w = (1 - beta) / (1 - np.power(beta, c))
    return torch.tensor(w / w.sum() * len(c), dtype=torch.float32)


def reweighted_mean(per_sample: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None,
                    normalise: str = "batch") -> torch.Tensor:
    """Plain mean without weights; else sum_i w_yi l_i divided by sum_i w_yi ("weighted_mean", what
    F.cross_entropy(weight=w) computes) or by the batch size ("batch")."""
    if weights is None:
        return per_sample.mean()
    w = weights.to(per_sample.device)[y]
    if normalise == "weighted_mean":
        return (w * per_sample).sum() / w.sum()
    if normalise == "batch":
        return (w * per_sample).mean()
    raise UserError(f"unknown re-weighting normalisation '{normalise}'; choose one of "
                    f"{', '.join(DRW_NORMALISATIONS)}")


def weighted_ce(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None,
                normalise: str = "batch") -> torch.Tensor:
    """CE re-weighted by w_y (see reweighted_mean); Cui et al.'s class-balanced loss divides by the batch
    size."""
    return reweighted_mean(F.cross_entropy(logits.float(), y, reduction="none"), y, weights, normalise)


def ldam_margins(counts, max_margin: float = 0.5) -> torch.Tensor:
    """Delta_j = C / n_j^(1/4) with C chosen so that the largest margin (rarest class) is max_margin."""
    m = 1.0 / np.power(np.maximum(np.asarray(counts, dtype=np.float64), 1), 0.25)
    return torch.tensor(m * (max_margin / m.max()), dtype=torch.float32)


def ldam_loss(logits, y, margins, scale: float, weights=None,
              normalise: str = "weighted_mean") -> torch.Tensor:
    """CE on s * (z - Delta_y e_y): the true-class logit lowered by its margin, then scaled."""
    z = logits.float() - F.one_hot(y, logits.shape[1]) * margins.to(logits.device)[None]
    return weighted_ce(scale * z, y, weights, normalise)


def balanced_softmax_loss(logits, y, counts, weights=None, normalise: str = "weighted_mean") -> torch.Tensor:
    per_sample = F.cross_entropy(logits.float() + log_prior(counts).to(logits.device), y, reduction="none")
    return reweighted_mean(per_sample, y, weights, normalise)


def default_drw_epoch(loss: str, epochs: int, drw_epoch: int | None) -> int | None:
    """LDAM-DRW re-weights from 80 % of training (the paper's 160 of 200 epochs); other losses never, unless
    --drw-epoch is given; a negative --drw-epoch turns it off."""
    if drw_epoch is None:
        return int(0.8 * epochs) if loss == "ldam" else None
    return None if drw_epoch < 0 else drw_epoch


def check_train_args(args) -> None:
    """Classification/train.py's long-tail flags, checked before its run folder exists."""
    if not 0 <= args.cb_beta < 1:
        raise UserError(f"--cb-beta must be in [0, 1), got {args.cb_beta}")
    if args.loss == "ldam" and not args.model.startswith(("resnet", "resnext", "wide_resnet")):
        raise UserError(f"--loss ldam replaces the `fc` classifier of a ResNet; {args.model} has none")
    if args.loss == "cb" and args.drw_epoch is not None and args.drw_epoch >= 0:
        raise UserError("--drw-epoch defers the class-balanced weights that --loss cb applies from the first "
                        "epoch; use --loss ce --drw-epoch N for deferred re-weighting, or drop --drw-epoch")


class EpochLoss:
    """loss_fn(model, x, y) -> (loss, logits) for one epoch (what common.engine.train_one_epoch takes)."""

    def __init__(self, name: str, counts, epoch: int, beta: float = 0.9999, drw_epoch: int | None = None,
                 max_margin: float = 0.5, scale: float = 30.0, drw_normalise: str = "weighted_mean"):
        if name not in LOSSES:
            raise UserError(f"unknown --loss '{name}'; choose one of {', '.join(LOSSES)}")
        if drw_normalise not in DRW_NORMALISATIONS:
            raise UserError(f"unknown --drw-normalise '{drw_normalise}'; choose one of "
                            f"{', '.join(DRW_NORMALISATIONS)}")
        self.name, self.counts = name, np.asarray(counts)
        self.weights = None
        if name == "cb" or (drw_epoch is not None and epoch >= drw_epoch):
            self.weights = effective_number_weights(counts, beta)
        self.normalise = "batch" if name == "cb" else drw_normalise
        self.margins = ldam_margins(counts, max_margin) if name == "ldam" else None
        self.scale = scale

    def __call__(self, model, x, y):
        logits = logits_of(model(x))
        if self.name == "ldam":
            loss = ldam_loss(logits, y, self.margins, self.scale, self.weights, self.normalise)
        elif self.name == "balanced_softmax":
            loss = balanced_softmax_loss(logits, y, self.counts, self.weights, self.normalise)
        else:  # ce (re-weighted under DRW) and cb
            loss = weighted_ce(logits, y, self.weights, self.normalise)
        return loss, logits


# ------------------------------------------------------------------------------------------ cosine classifier

class CosineLinear(nn.Linear):
    """cos(feature, w_j) per class, no bias: LDAM's scale s presumes logits in [-1, 1]."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x):
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


def use_cosine_classifier(model: nn.Module) -> nn.Module:
    if not isinstance(getattr(model, "fc", None), nn.Linear):
        raise UserError("--loss ldam needs a model with an `fc` classifier (a ResNet)")
    model.fc = CosineLinear(model.fc.in_features, model.fc.out_features)
    return model


def plain_linear_equivalent(model: nn.Module) -> nn.Module:
    """Replace a CosineLinear fc by an nn.Linear with unit-norm rows and zero bias: the same argmax for every
    input (the feature norm is common to all classes), so the exported file loads as an ordinary
    classifier."""
    fc = getattr(model, "fc", None)
    if isinstance(fc, CosineLinear):
        new = nn.Linear(fc.in_features, fc.out_features).to(fc.weight.device)
        with torch.no_grad():
            new.weight.copy_(F.normalize(fc.weight, dim=1))
            new.bias.zero_()
        model.fc = new
    return model


# ----------------------------------------------------------------------------------------------- post hoc

class LogitAdjusted(nn.Module):
    """Menon et al.'s post-hoc rule: predict argmax_y f_y(x) - tau * log pi_y."""

    def __init__(self, model: nn.Module, counts, tau: float = 1.0):
        super().__init__()
        self.model = model
        self.register_buffer("offset", tau * log_prior(counts))

    def forward(self, x):
        return logits_of(self.model(x)) - self.offset


def tau_normalize_(linear: nn.Linear, tau: float, keep_bias: bool = False) -> nn.Linear:
    """In place: w_j <- w_j / ||w_j||^tau; the bias is dropped (set to 0) unless keep_bias."""
    lo, hi = TAU_NORM_RANGE
    if not lo <= tau <= hi:
        raise UserError(f"--tau-norm must be in [{lo:g}, {hi:g}], got {tau}")
    with torch.no_grad():
        norms = linear.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
        linear.weight.div_(norms.pow(tau))
        if linear.bias is not None and not keep_bias:
            linear.bias.zero_()
    return linear
