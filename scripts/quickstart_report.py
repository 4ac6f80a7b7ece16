"""Collect the quickstart's stage results into one table: runs/quickstart/results.md (also printed)."""
import argparse
import os

from common.jsonfile import read_json_if_present


def pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def snippet(path, title):
    """A stage's own markdown report, under a heading of ours."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        body = [ln for ln in f.read().strip().splitlines() if not ln.startswith("## ")]
    return ["", f"### {title}", "", *body]


def classifier_section(out: str, split: dict) -> list:
    lines = ["## TGN: classifier (OA, macro-F1, head/tail mean accuracy on the balanced test set; one seed)",
             "", "| classifier | OA | macro-F1 | head acc | tail acc |", "|---|---|---|---|---|"]
    runs = {}
    for run, label in (("classification_baseline", "baseline (original train set)"),
                       ("classification_la1", "baseline + logit adjustment, post hoc (tau 1)"),
                       ("classification_taunorm1", "baseline + tau-normalisation, post hoc (tau 1)"),
                       ("classification_tgn", "TGN (original + generated tail images)")):
        r = runs[run] = read_json_if_present(os.path.join(out, run, "results.json"))
        if r:
            lines.append(f"| {label} | {pct(r['oa'])} | {pct(r['macro_f1'])} | {pct(r.get('head_acc'))} | "
                         f"{pct(r.get('tail_acc'))} |")
    base = runs["classification_baseline"]
    columns = (("classification_baseline", "baseline"), ("classification_la1", "+ logit adj."),
               ("classification_taunorm1", "+ tau-norm"), ("classification_tgn", "TGN"))
    if base:
        lines += ["", "Per-class test accuracy (classes by descending train count):", "",
                  "| class | part | train images | " + " | ".join(c for _, c in columns) + " |",
                  "|---|---|---|" + "---|" * len(columns)]
        for part in ("head", "tail"):
            for c in split[part]:
                accs = [pct(runs[r]["per_class_acc"][c]) if runs[r] else "-" for r, _ in columns]
                lines.append(f"| {base['names'][c]} | {part} | {split['train_counts'][c]} | "
                             + " | ".join(accs) + " |")
    return lines


def kmdn_section(out: str) -> list:
    s = read_json_if_present(os.path.join(out, "kmdn", "distill", "summary.json"))
    if not s:
        return []
    lines = ["", "## TGN: KMDN (each model on its own classes' test images)", "",
             "| model | stage-1 OA | distilled OA | stage-1 macro-F1 | distilled macro-F1 |",
             "|---|---|---|---|---|"]
    for part in ("head", "tail"):
        b, a = s["before"][part], s["after"][part]
        lines.append(f"| {part} model | {pct(b['oa'])} | {pct(a['oa'])} | {pct(b['macro_f1'])} | "
                     f"{pct(a['macro_f1'])} |")
    return lines


def clip_zero_shot_row(report: dict | None) -> list:
    """Plain CLIP zero-shot with 'a photo of a {class}', the same model that annotated DSVA's attributes."""
    if not report:
        return []
    z = report["zero_shot"]["name"]
    u, s = z["unseen_among_all"], z["seen_among_all"]
    h = 2 * u * s / (u + s) if u + s else 0.0
    return [(f"| plain CLIP zero-shot, same model (no calibration) | {pct(z['unseen_among_unseen'])} | "
             f"{pct(u)} | {pct(s)} | {pct(h)} |")]


def dsva_section(out: str) -> list:
    r = read_json_if_present(os.path.join(out, "dsva", "results.json"))
    if not r:
        return []
    lines = ["", (f"## DSVA: zero-shot on split {r['split']} ({len(r['seen'])} seen / {len(r['unseen'])} "
                  f"unseen classes, chance {100 / len(r['unseen']):.1f} %)"), "",
             "| method | ZSL acc | GZSL U | GZSL S | GZSL H |", "|---|---|---|---|---|"]
    for key, label in (("last", "DSVA, last epoch (epochs and gamma chosen on validation classes)"),
                       ("best_test", "DSVA, best epoch on test (upstream's selection)")):
        if r.get(key):
            e = r[key]
            lines.append(f"| {label} | {pct(e['zsl'])} | {pct(e['u'])} | {pct(e['s'])} | {pct(e['h'])} |")
    lines += clip_zero_shot_row(read_json_if_present("checkpoints/synth_clip_report.json"))
    return lines


def times_section(path: str) -> list:
    """Wall and CPU (user + system, children included) seconds per step, from the quickstart's times.tsv."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        rows = [ln.rstrip("\n").split("\t") for ln in f if ln.strip()][1:]
    rows = [(r[0], float(r[1]), float(r[2]) + float(r[3])) for r in rows if len(r) == 4]
    lines = ["", "## Time per step (the CLIP fits and DSVA run beside the other steps)", "",
             "| step | wall s | CPU s |", "|---|---|---|"]
    lines += [f"| {name} | {wall:.0f} | {cpu:.0f} |" for name, wall, cpu in rows]
    lines.append(f"| all steps | {sum(r[1] for r in rows):.0f} | {sum(r[2] for r in rows):.0f} |")
    return lines


def get_args_parser():
    p = argparse.ArgumentParser()
    p.add_argument("--output-dir", default="runs/quickstart")
    p.add_argument("--data-root", default="data/synthetic/processed")
    p.add_argument("--seconds", type=int, default=None)
    return p


def main():
    args = get_args_parser().parse_args()
    split = read_json_if_present(os.path.join(args.data_root, "split.json"))
    lines = ["# Quickstart results (embedded synthetic data set, CPU scale)", ""]
    lines += classifier_section(args.output_dir, split) + kmdn_section(args.output_dir)
    lines += snippet(os.path.join(args.output_dir, "cdtg", "generated", "quality.md"),
                     "TGN: CDTG generation quality")
    lines += dsva_section(args.output_dir)
    lines += snippet("checkpoints/synth_clip_report.md",
                     "The small CLIP fitted to the embedded set (seen classes)")
    lines += ["", ("Pictures: classification_*/confusion_matrix.png and acc_vs_count.png, "
                   "cdtg/train/samples/, cdtg/generated/grid.png, dsva/attention_maps.png (all under "
                   f"{args.output_dir}).")]
    lines += times_section(os.path.join(args.output_dir, "times.tsv"))
    if args.seconds is not None:
        lines += ["", f"Wall time of the quickstart: {args.seconds} s."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
