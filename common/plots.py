"""Pictures a person would rather look at than read: confusion matrix, accuracy against train count."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def confusion_matrix_png(cm: np.ndarray, names: list, path: str, title: str = "Confusion matrix") -> None:
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(names)
    fig, ax = plt.subplots(figsize=(0.45 * n + 3, 0.45 * n + 2.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy_vs_count_png(train_counts, per_class_acc, names: list, path: str, tail_ids=()) -> None:
    """Bars: train images per class (descending); line: test accuracy of each class."""
    order = np.argsort(-np.asarray(train_counts), kind="stable")
    counts = np.asarray(train_counts)[order]
    acc = np.asarray([np.nan if a is None else a for a in per_class_acc], dtype=float)[order]
    colours = ["tab:orange" if i in set(tail_ids) else "tab:blue" for i in order]
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(order) + 2), 4))
    ax.bar(range(len(order)), counts, color=colours)
    ax.set_yscale("log")
    ax.set_ylabel("train images (log)")
    ax.set_xticks(range(len(order)), [names[i] for i in order], rotation=60, ha="right", fontsize=7)
    ax2 = ax.twinx()
    ax2.plot(range(len(order)), 100 * acc, "o-", color="black")
    ax2.set_ylim(0, 105)
    ax2.set_ylabel("test accuracy (%)")
    ax.set_title("Per-class accuracy against train count (orange: tail)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def quality_curves_png(rows: list, path: str, title: str = "Generation quality during training") -> None:
    """CDTG's in-training quality (rows of metrics.jsonl with eval_* columns): FID_cls (per-class mean and
    pooled) and the shares assigned to the intended class, against the iteration."""
    rows = [r for r in rows if "eval_fid" in r]
    it = [r["iter"] for r in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax.plot(it, [r["eval_fid"] for r in rows], "o-", label="FID_cls, mean over tail classes")
    ax.plot(it, [r["eval_pooled_fid"] for r in rows], "s--", label="FID_cls, pooled")
    ax.set_xlabel("iteration")
    ax.set_ylabel("FID (classifier features)")
    ax.legend(fontsize=7)
    ax2.plot(it, [100 * r["eval_tail_model"] for r in rows], "o-", label="tail model")
    ax2.plot(it, [100 * r["eval_classifier"] for r in rows], "s--", label="independent classifier")
    ax2.set_ylim(0, 102)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("assigned to the intended class (%)")
    ax2.legend(fontsize=7)
    for a in (ax, ax2):
        a.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
