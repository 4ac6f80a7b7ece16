"""ZSL and GZSL figures and the attention-map picture.

- ZSL: images of unseen classes, classified among the unseen classes only; per-class mean top-1 accuracy.
- GZSL: images of seen and of unseen classes, classified among seen + unseen classes. Calibrated stacking
  subtracts gamma from the seen classes' softmax probabilities before the argmax. U (S) = per-class mean
  accuracy on unseen (seen) images; H = 2US / (U + S).

Per-class mean accuracy averages over the classes that have test images (upstream would give NaN otherwise).
Scores are computed once per image against every class (logits a . A); restricting columns and the softmax
happen here, so one pass gives ZSL and GZSL.
"""
import numpy as np
import torch
from tqdm import tqdm

from common.distributed import autocast
from common.errors import batch_loop

BRANCHES = ("local", "global", "proposal")


def per_class_mean_accuracy(y_true, y_pred, classes) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    accs = [float((y_pred[y_true == c] == c).mean()) for c in classes if (y_true == c).any()]
    return float(np.mean(accs)) if accs else float("nan")


def zsl_predict(logits: torch.Tensor, unseen: list) -> np.ndarray:
    """Global class ids predicted among the unseen classes (argmax of the softmax = argmax of the logits)."""
    cols = torch.as_tensor(unseen)
    return cols[logits[:, cols].argmax(1)].numpy()


def calibrated_stacking(probs: torch.Tensor, seen_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Subtract gamma from the probability of every seen class."""
    return probs - gamma * seen_mask.to(probs.dtype)


def gzsl_predict(logits: torch.Tensor, seen: list, unseen: list, gamma: float) -> np.ndarray:
    """Global class ids predicted among seen + unseen classes, with calibrated stacking."""
    cols = torch.as_tensor(sorted(seen + unseen))
    probs = logits[:, cols].float().softmax(1)
    seen_mask = torch.isin(cols, torch.as_tensor(seen))
    return cols[calibrated_stacking(probs, seen_mask, gamma).argmax(1)].numpy()


def harmonic_mean(u: float, s: float) -> float:
    return 0.0 if u + s == 0 else 2 * u * s / (u + s)


def zsl_gzsl(unseen_logits, unseen_y, seen_logits, seen_y, seen: list, unseen: list, gamma: float) -> dict:
    """{'zsl', 'u', 's', 'h'} (fractions) from logits over all classes [N, C] and global labels."""
    zsl = per_class_mean_accuracy(unseen_y, zsl_predict(unseen_logits, unseen), unseen)
    u = per_class_mean_accuracy(unseen_y, gzsl_predict(unseen_logits, seen, unseen, gamma), unseen)
    s = per_class_mean_accuracy(seen_y, gzsl_predict(seen_logits, seen, unseen, gamma), seen)
    return {"zsl": zsl, "u": u, "s": s, "h": harmonic_mean(u, s)}


@torch.no_grad()
def collect_logits(model, loader, class_attributes: torch.Tensor, rt, amp: bool = False,
                   proposal: bool = False, desc: str = "eval") -> tuple:
    """({branch: logits [N, C] on the CPU}, labels [N]) over a loader; class_attributes [K, C]."""
    model.eval()
    outs, ys = {}, []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not rt.is_main, dynamic_ncols=True):
        with autocast(rt, amp):
            out = model(x.to(rt.device, non_blocking=True), class_attributes, proposal=proposal)
        for b in BRANCHES:
            if b in out:
                outs.setdefault(b, []).append(out[b].float().cpu())
        ys.append(torch.as_tensor(y))
    return {b: torch.cat(v) for b, v in outs.items()}, torch.cat(ys).numpy()


def scores(model, seen_loader, unseen_loader, class_attributes, rt, amp: bool = False,
           proposal: bool = False) -> tuple:
    """(unseen logits by branch, unseen labels, seen logits by branch, seen labels) of two test sets."""
    u_logits, u_y = collect_logits(model, unseen_loader, class_attributes, rt, amp, proposal, "eval unseen")
    s_logits, s_y = collect_logits(model, seen_loader, class_attributes, rt, amp, proposal, "eval seen")
    return u_logits, u_y, s_logits, s_y


def figures(scored: tuple, seen: list, unseen: list, gamma: float) -> dict:
    """{branch: {'zsl', 'u', 's', 'h'}} for every branch in `scored` (from `scores`)."""
    u_logits, u_y, s_logits, s_y = scored
    return {b: zsl_gzsl(u_logits[b], u_y, s_logits[b], s_y, seen, unseen, gamma) for b in u_logits}


def gamma_sweep(scored: tuple, seen: list, unseen: list, grid: list, branch: str) -> list:
    """[{'gamma', 'zsl', 'u', 's', 'h'}] of `branch` for every calibrated-stacking gamma of `grid`."""
    u_logits, u_y, s_logits, s_y = scored
    return [{"gamma": float(g), **zsl_gzsl(u_logits[branch], u_y, s_logits[branch], s_y, seen, unseen, g)}
            for g in grid]


def best_gamma(scored: tuple, seen: list, unseen: list, grid: list, branch: str) -> float:
    """The calibrated-stacking gamma of `grid` with the highest H of `branch` (the first of equal ones)."""
    hs = [r["h"] for r in gamma_sweep(scored, seen, unseen, grid, branch)]
    return float(grid[int(np.argmax(hs))])


@batch_loop("evaluation")
def evaluate(model, seen_loader, unseen_loader, class_attributes, seen: list, unseen: list, gamma: float, rt,
             amp: bool = False, proposal: bool = False) -> dict:
    """{branch: {'zsl', 'u', 's', 'h'}} for every branch the model computes."""
    return figures(scores(model, seen_loader, unseen_loader, class_attributes, rt, amp, proposal), seen,
                   unseen, gamma)


def pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}"


# ---------------------------------------------------------------------------------------------- pictures

@torch.no_grad()
def attention_png(model, dataset, indices: list, class_attributes: torch.Tensor, names: list, attr_names,
                  mean, std, path: str, rt, candidates: list, top: int = 3) -> None:
    """One row per test image: the image with the local branch's prediction among `candidates` (the unseen
    classes: ZSL), then its `top` attributes (local scores) with their attention maps laid over the image."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    model.eval()
    if not indices:
        return
    x = torch.stack([dataset[i][0] for i in indices]).to(rt.device)
    labels = [dataset[i][1] for i in indices]
    out = model(x, class_attributes)
    pred = zsl_predict(out["local"].float().cpu(), candidates).tolist()
    maps = F.interpolate(out["attention"].float(), size=x.shape[-2:], mode="bilinear",
                         align_corners=False).cpu()
    scores = out["local_attr"].float().cpu()
    images = (x.cpu() * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)).clamp(0, 1)
    fig, axes = plt.subplots(len(indices), top + 1, figsize=(2.2 * (top + 1), 2.3 * len(indices)),
                             squeeze=False)
    for r in range(len(indices)):
        img = images[r].permute(1, 2, 0).numpy()
        axes[r, 0].imshow(img)
        axes[r, 0].set_title(f"{names[labels[r]]}\nZSL pred: {names[pred[r]]}", fontsize=7)
        for j, k in enumerate(scores[r].argsort(descending=True)[:top].tolist(), 1):
            m = maps[r, k].numpy()
            m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
            axes[r, j].imshow(img)
            axes[r, j].imshow(m, cmap="jet", alpha=0.45)
            name = attr_names[k] if attr_names else f"attribute {k}"
            axes[r, j].set_title(f"{name} ({scores[r, k]:.2f})", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pick_images(items: list, classes: list, count: int) -> list:
    """Indices of the first image of each of the first `count` classes (deterministic)."""
    first = {}
    for i, (_, y) in enumerate(items):
        if y in classes and y not in first:
            first[y] = i
    return [first[c] for c in classes if c in first][:count]
