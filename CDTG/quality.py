"""Generation-quality measures of CDTG: class consistency, diversity, and FID / KID in a classifier's feature space.

FID and KID use the penultimate features of an independent classifier trained on the real data (not Inception:
its ImageNet features say little about 64 px remote-sensing chips, and cannot be downloaded offline). Values are
therefore comparable between runs that use the same classifier, not with published Inception FIDs.
"""
import contextlib
import io
import warnings

import numpy as np
import torch
from torch import nn

from common import checkpoint
from common.backbones import build_classifier
from common.errors import UserError


def share_correct(predicted, intended) -> float:
    """Share of images assigned to their intended class."""
    predicted, intended = np.asarray(predicted), np.asarray(intended)
    return float((predicted == intended).mean()) if len(predicted) else float("nan")


def _sqrtm_trace(a: np.ndarray, b: np.ndarray) -> float:
    """tr sqrt(A B) for symmetric PSD A, B, via the symmetric form sqrt(A)^T B sqrt(A) (stable, no complex)."""
    w, v = np.linalg.eigh(a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root_a @ b @ root_a
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """FID between two feature sets [N, D], [M, D]: |mu_x - mu_y|^2 + tr(Sx + Sy - 2 sqrt(Sx Sy))."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    mu_x, mu_y = x.mean(0), y.mean(0)
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    sx, sy = np.atleast_2d(sx), np.atleast_2d(sy)
    value = ((mu_x - mu_y) ** 2).sum() + np.trace(sx) + np.trace(sy) - 2 * _sqrtm_trace(sx, sy)
    return float(max(value, 0.0))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kernel_inception_distance(x: np.ndarray, y: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple:
    """KID (unbiased MMD^2 with the cubic polynomial kernel (x.y/d + 1)^3) averaged over random subsets.

    Returns (mean, std over subsets); the subset size is capped by the smaller set."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = [_mmd2_unbiased(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def pair_indices(n: int, max_pairs: int, seed: int = 0) -> list:
    """All unordered pairs of range(n) when there are at most max_pairs, else max_pairs random distinct pairs."""
    total = n * (n - 1) // 2
    if total <= max_pairs:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    rng = np.random.default_rng(seed)
    pairs = set()
    while len(pairs) < max_pairs:
        i, j = rng.choice(n, 2, replace=False)
        pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


def mean_pairwise_distance(features: np.ndarray, max_pairs: int = 2000, seed: int = 0) -> float:
    """Mean Euclidean distance between pairs of feature vectors (a diversity measure; 0 = all identical)."""
    features = np.asarray(features, np.float64)
    pairs = pair_indices(len(features), max_pairs, seed)
    if not pairs:
        return float("nan")
    i, j = np.array(pairs).T
    return float(np.linalg.norm(features[i] - features[j], axis=1).mean())


class PenultimateFeatures:
    """Wraps a classifier so that a call returns (logits, the input of its last Linear layer)."""

    def __init__(self, model: nn.Module):
        self.model = model
        last = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not last:
            raise ValueError(f"{type(model).__name__} has no Linear layer")
        self._feat = None
        last[-1].register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self._feat = inputs[0]

    def __call__(self, x):
        logits = self.model(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        return logits, self._feat.flatten(1)


def load_independent_classifier(path: str, names: list, device):
    """A Classification/train.py model_final.pt as PenultimateFeatures, and the file's dict."""
    ck = checkpoint.load(path, "classifier")
    if not isinstance(ck, dict) or not all(k in ck for k in ("model", "arch", "names", "img_size", "norm")):
        raise UserError(f"{path} is not a Classification/train.py model_final.pt (needs model, arch, names, "
                        f"img_size, norm)")
    if list(ck["names"]) != list(names):
        raise UserError(f"classifier {path} was trained on other classes than the data set's; pass one trained "
                        f"on this data root")
    model = build_classifier(ck["arch"], len(names), "none", verbose=False)
    model.load_state_dict(ck["model"])
    return PenultimateFeatures(model.to(device).eval()), ck


def load_lpips(net: str = "alex", device="cpu", random_trunk: bool = False):
    """(LPIPS model, None), or (None, reason) when it or its backbone weights cannot be had (offline).
    `random_trunk` leaves the backbone randomly initialised (no download; for tests)."""
    try:
        import lpips
    except ImportError:
        return None, "unavailable: the lpips package is not installed"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            model = lpips.LPIPS(net=net, pnet_rand=random_trunk, verbose=False).to(device).eval()
    except Exception as e:  # torchvision backbone weights are downloaded on first use
        return None, f"unavailable: LPIPS {net} backbone weights could not be loaded ({type(e).__name__})"
    return model, None


@torch.no_grad()
def mean_pairwise_lpips(model, images: torch.Tensor, max_pairs: int = 200, batch: int = 50, seed: int = 0) -> float:
    """Mean LPIPS over pairs of images in [-1, 1] [N, 3, H, W]."""
    pairs = pair_indices(len(images), max_pairs, seed)
    if not pairs:
        return float("nan")
    device = next(model.parameters()).device
    values = []
    for s in range(0, len(pairs), batch):
        i, j = np.array(pairs[s: s + batch]).T
        values.append(model(images[i].to(device), images[j].to(device)).flatten().cpu())
    return float(torch.cat(values).mean())
