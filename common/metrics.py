"""Classification metrics from a confusion matrix: OA, per-class accuracy and F1, macro-F1, group means."""
import numpy as np


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """cm[i, j] = number of samples of true class i predicted as j."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes)


def _safe_div(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def overall_accuracy(cm: np.ndarray) -> float:
    return float(np.trace(cm) / max(cm.sum(), 1))


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class; NaN for a class with no test sample."""
    support = cm.sum(1)
    acc = _safe_div(np.diag(cm), support)
    acc[support == 0] = np.nan
    return acc


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(np.float64)
    precision = _safe_div(tp, cm.sum(0))
    recall = _safe_div(tp, cm.sum(1))
    return _safe_div(2 * precision * recall, precision + recall)


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over classes present in the test labels or predictions (sklearn's macro average)."""
    present = (cm.sum(0) + cm.sum(1)) > 0
    return float(per_class_f1(cm)[present].mean()) if present.any() else 0.0


def group_mean_accuracy(cm: np.ndarray, groups: dict) -> dict:
    """Mean per-class accuracy within each named group of class ids, e.g. {'head': [...], 'tail': [...]}."""
    acc = per_class_accuracy(cm)
    out = {}
    for name, ids in groups.items():
        vals = acc[list(ids)]
        vals = vals[~np.isnan(vals)]
        out[name] = float(vals.mean()) if len(vals) else float("nan")
    return out


def summarize(cm: np.ndarray, groups: dict | None = None) -> dict:
    """Everything a results table needs, as plain Python numbers."""
    out = {"oa": overall_accuracy(cm), "macro_f1": macro_f1(cm),
           "mean_acc": float(np.nanmean(per_class_accuracy(cm))),
           "per_class_acc": [None if np.isnan(a) else float(a) for a in per_class_accuracy(cm)],
           "per_class_f1": [float(f) for f in per_class_f1(cm)]}
    if groups:
        out.update({f"{k}_acc": v for k, v in group_mean_accuracy(cm, groups).items()})
    return out
