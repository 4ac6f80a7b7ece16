"""Pictures a person would rather look at than read: confusion matrix, accuracy against train count."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
