"""Collect the quickstart's stage results into one table: runs/quickstart/results.md (also printed)."""
import argparse
import json
import os


def pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def classifier_rows(out: str) -> list:
    rows = []
    for run, label in (("classification_baseline", "baseline (original train set)"),
                       ("classification_tgn", "TGN (original + generated tail images)")):
        path = os.path.join(out, run, "results.json")
        if os.path.isfile(path):
            r = json.load(open(path))
            rows.append(f"| {label} | {pct(r['oa'])} | {pct(r['macro_f1'])} | {pct(r.get('head_acc'))} | "
                        f"{pct(r.get('tail_acc'))} |")
    return rows


def per_class_table(out: str) -> list:
    path = os.path.join(out, "classification_baseline", "results.json")
    if not os.path.isfile(path):
        return []
    r = json.load(open(path))
    split = json.load(open(os.path.join("data/synthetic/processed", "split.json")))
    lines = ["", "Per-class test accuracy of the baseline (classes by descending train count):", "",
             "| class | part | train images | accuracy |", "|---|---|---|---|"]
    for part in ("head", "tail"):
        for c in split[part]:
            lines.append(f"| {r['names'][c]} | {part} | {split['train_counts'][c]} | {pct(r['per_class_acc'][c])} |")
    return lines


def kmdn_rows(out: str) -> list:
    path = os.path.join(out, "kmdn", "distill", "summary.json")
    if not os.path.isfile(path):
        return []
    s = json.load(open(path))
    lines = ["", "## KMDN (each model on its own classes' test images)", "",
             "| model | stage-1 OA | distilled OA | stage-1 macro-F1 | distilled macro-F1 |", "|---|---|---|---|---|"]
    for part in ("head", "tail"):
        b, a = s["before"][part], s["after"][part]
        lines.append(f"| {part} model | {pct(b['oa'])} | {pct(a['oa'])} | {pct(b['macro_f1'])} | "
                     f"{pct(a['macro_f1'])} |")
    return lines


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/quickstart")
    p.add_argument("--seconds", type=int, default=None)
    args = p.parse_args()
    lines = ["# Quickstart results (embedded synthetic data set, CPU scale)", "",
             "## TGN classifier", "", "| classifier | OA | macro-F1 | head acc | tail acc |", "|---|---|---|---|---|"]
    lines += classifier_rows(args.out) + per_class_table(args.out)
    lines += kmdn_rows(args.out)
    lines += ["", f"Pictures: {args.out}/classification_baseline/confusion_matrix.png, acc_vs_count.png"]
    if args.seconds is not None:
        lines += ["", f"Wall time of the quickstart: {args.seconds} s."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
