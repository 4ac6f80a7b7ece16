"""The classification report every TGN stage prints and saves: table, JSON, confusion matrix, accuracy
plot."""
import os

import numpy as np

from common.finished import write_json_last
from common.metrics import summarize
from common.plots import accuracy_vs_count_png, confusion_matrix_png


def groups_from_split(split: dict | None, class_ids: list) -> dict:
    """{'head': [indices], 'tail': [...]} in the index space of `class_ids` (the model's outputs)."""
    if not split:
        return {}
    pos = {c: i for i, c in enumerate(class_ids)}
    return {part: [pos[c] for c in split[part] if c in pos] for part in ("head", "tail") if split.get(part)}


def markdown_table(res: dict, names: list, train_counts=None) -> str:
    lines = ["| metric | value |", "|---|---|"]
    for key in ("oa", "macro_f1", "mean_acc", "head_acc", "tail_acc"):
        if key in res:
            lines.append(f"| {key} | {100 * res[key]:.2f} |")
    lines += ["", "| id | class | train images | test acc | F1 |", "|---|---|---|---|---|"]
    order = range(len(names)) if train_counts is None else np.argsort(-np.asarray(train_counts),
                                                                      kind="stable")
    for i in order:
        acc = res["per_class_acc"][i]
        n = "" if train_counts is None else train_counts[i]
        lines.append(f"| {i} | {names[i]} | {n} | {'-' if acc is None else f'{100 * acc:.1f}'} | "
                     f"{100 * res['per_class_f1'][i]:.1f} |")
    return "\n".join(lines)


def write_report(cm: np.ndarray, names: list, out_dir: str, groups: dict | None = None, train_counts=None,
                 tail_ids=(), title: str = "", settings: dict | None = None) -> dict:
    """Save results.md, confusion_matrix.png, (with train counts) acc_vs_count.png and, last, results.json
    (with `settings`, see common.finished: it marks the report finished); print."""
    os.makedirs(out_dir, exist_ok=True)
    res = summarize(cm, groups)
    res["names"] = names
    res["confusion_matrix"] = cm.tolist()
    table = markdown_table(res, names, train_counts)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write((f"## {title}\n\n" if title else "") + table + "\n")
    confusion_matrix_png(cm, names, os.path.join(out_dir, "confusion_matrix.png"),
                         title or "Confusion matrix")
    if train_counts is not None:
        accuracy_vs_count_png(train_counts, res["per_class_acc"], names,
                              os.path.join(out_dir, "acc_vs_count.png"), tail_ids)
    write_json_last(os.path.join(out_dir, "results.json"),
                    {**res, **({"settings": settings} if settings else {})})
    print(table)
    return res


def export_classifier(model, cm: np.ndarray, out: str, names: list, groups: dict | None, split: dict | None,
                      title: str, **meta) -> None:
    """A finished classifier run's outputs: model_final.pt (weights + meta: arch, names, img_size, norm, ...)
    and the report of its last test pass."""
    from common import checkpoint
    path = os.path.join(out, "model_final.pt")
    checkpoint.export_weights(model, path, names=names, **meta)
    write_report(cm, names, out, groups, split["train_counts"] if split else None,
                 split["tail"] if split else (), title=title)
    print(f"weights: {path}")
