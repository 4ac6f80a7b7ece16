"""benchmarks/long_tail.py's report from the finished runs: <out>/results.md (mean ± std over seeds, and each
method's per-seed paired difference against CE), <out>/runs.csv (one row per run) and the per-group plots."""
import csv
import os

import numpy as np

from benchmarks.long_tail_plan import protocol_flags
from common.jsonfile import read_json_if_present
from common.layout import read_list

LT_COLUMNS = (("oa", "OA"), ("macro_f1", "macro-F1"), ("head_acc", "head"), ("tail_acc", "tail"),
              ("many_acc", "many"), ("medium_acc", "medium"), ("few_acc", "few"))


def count_groups(train_counts: list) -> dict:
    """{'many': [class ids], ...} by train images (> 100, 20-100, < 20); groups with no class are left out."""
    rules = {"many": lambda n: n > 100, "medium": lambda n: 20 <= n <= 100, "few": lambda n: n < 20}
    groups = {name: [c for c, n in enumerate(train_counts) if rule(n)] for name, rule in rules.items()}
    return {name: ids for name, ids in groups.items() if ids}


def longtail_metrics(res: dict, groups: dict) -> dict:
    out = {k: res.get(k) for k in ("oa", "macro_f1", "head_acc", "tail_acc")}
    acc = res["per_class_acc"]
    for name, ids in groups.items():
        vals = [acc[c] for c in ids if acc[c] is not None]
        out[f"{name}_acc"] = float(np.mean(vals)) if vals else None
    return out


def mean_std(values: list) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    v = 100 * np.asarray(v, dtype=float)
    return f"{v.mean():.1f}" if len(v) == 1 else f"{v.mean():.1f} ± {v.std(ddof=1):.1f}"


def signed_mean_std(values: list) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    v = 100 * np.asarray(v, dtype=float)
    m = round(float(v.mean()), 1) + 0.0  # no "-0.0"
    return f"{m:+.1f}" if len(v) == 1 else f"{m:+.1f} ± {v.std(ddof=1):.1f}"


def longtail_section(rows: list, methods: list, columns: list, groups: dict, train_counts: list,
                     protocol: str = "") -> list:
    by = {(r["method"], r["seed"]): r for r in rows}
    head = "| method | seeds | " + " | ".join(label for _, label in columns) + " |"
    sep = "|---|---|" + "---|" * len(columns)
    sizes = ", ".join(f"{g} {len(ids)} classes" for g, ids in groups.items())
    title = f", protocol {protocol}" if protocol else ""
    lines = [f"## Long-tail classification{title} (test set; mean ± std over seeds, %)", "",
             (f"Groups by train images: many > 100, medium 20-100, few < 20 ({sizes}); head/tail from "
              f"split.json. Train counts: {min(train_counts)}-{max(train_counts)}."), "", head, sep]
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        if rs:
            lines.append(f"| {m} | {len(rs)} | " + " | ".join(mean_std([r.get(k) for r in rs])
                                                              for k, _ in columns)
                         + " |")
    lines += ["", "Paired difference against CE (same seed; mean ± std over seeds, points):", "", head, sep]
    for m in methods:
        if m == "ce":
            continue
        seeds = [s for (mm, s) in by if mm == m and ("ce", s) in by]
        if seeds:
            lines.append(f"| {m} − ce | {len(seeds)} | " + " | ".join(signed_mean_std(
                [None if by[(m, s)].get(k) is None or by[("ce", s)].get(k) is None
                 else by[(m, s)][k] - by[("ce", s)][k] for s in seeds]) for k, _ in columns) + " |")
    return lines


def protocols_section(rows: list, methods: list, protocols: list) -> list:
    """OA, head and tail of every method under each protocol, side by side."""
    keys = (("oa", "OA"), ("head_acc", "head"), ("tail_acc", "tail"))
    lines = ["", "## The protocols side by side (test set; mean ± std over seeds, %)", "",
             "| method | " + " | ".join(f"{p} {label}" for p in protocols for _, label in keys) + " |",
             "|---|" + "---|" * (len(protocols) * len(keys))]
    for m in methods:
        cells = [mean_std([r.get(k) for r in rows if r["method"] == m and r["protocol"] == p])
                 for p in protocols for k, _ in keys]
        if any(c != "-" for c in cells):
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def settings_section(args, rows: list, protocols: list) -> list:
    """Each method's free setting, what it got and where it came from."""
    val = args.val_list
    where = f"chosen on the validation list {val}" if val else "fixed (no validation list)"
    lines = ["", "## Settings of each method (the free ones chosen without the test set)", "",
             "| protocol | method | setting | source |", "|---|---|---|---|"]
    for p in protocols:
        if not any(r["protocol"] == p for r in rows):
            continue
        recipe = " ".join(protocol_flags(args, p)) or "the config (Adam, step schedule)"
        lines.append(f"| {p} | all | {recipe} | protocol |")
        rs = {(r["method"], r["seed"]): r for r in rows if r["protocol"] == p}
        seeds = sorted({s for _, s in rs})
        present = {m for m, _ in rs}  # methods with a finished run under this protocol
        if "ldam_drw" in present:
            tuned = os.path.join(args.output_dir, "longtail", p, "tune", "ldam_drw.json")
            doc = read_json_if_present(tuned) if val else None
            if doc:
                sc = ", ".join(f"{k}: {100 * v:.1f}" for k, v in doc["val_mean_acc"].items())
                lines.append(f"| {p} | ldam_drw | DRW from epoch {doc['drw_epoch']} of {doc['epochs']}; "
                             f"margin 0.5, s 30 | DRW start {where} (seed {args.seeds[0]}; mean per-class "
                             f"accuracy by DRW start {sc}); margin and s: reference defaults |")
            else:
                lines.append(f"| {p} | ldam_drw | DRW from 80 % of the epochs; margin 0.5, s 30 | reference "
                             f"defaults |")
        for m, key, fixed in (("crt", "epochs", None),
                              ("logit_adjust", "logit_adjust", args.logit_adjust_tau),
                              ("tau_norm", "tau_norm", args.tau_norm)):
            if m not in present:
                continue
            got = []
            for s_ in seeds:
                r = rs.get((m, s_))
                doc = read_json_if_present(os.path.join(r["folder"], "tuned.json")) if r else None
                got.append(f"{doc[key]:g}" if doc else "-")
            name = "epochs" if m == "crt" else "tau"
            if val:
                lines.append(f"| {p} | {m} | {name} per seed {', '.join(got)} | {where} |")
            else:
                lines.append(f"| {p} | {m} | {name} {'all (10)' if fixed is None else f'{fixed:g}'} | "
                             f"reference default |")
    return lines


def kmdn_section(rows: list) -> list:
    with_d = {r["seed"]: r for r in rows if r["method"] == "distill"}
    without = {r["seed"]: r for r in rows if r["method"] == "distill_alpha0"}
    lines = ["",
             "## KMDN: distillation against its alpha = 0 control (same stage-1 models and schedule; %)", "",
             ("| model, own classes' test images | seeds | stage 1 | alpha = 0 (no distillation) | distilled "
              "| distilled − alpha 0 |"), "|---|---|---|---|---|---|"]
    seeds = sorted(set(with_d) & set(without))
    if not seeds:
        return []
    for part in ("tail", "head"):
        for metric, name in (("oa", "accuracy"), ("macro_f1", "macro-F1")):
            k = f"{part}_{metric}"
            lines.append(f"| {part} model {name} | {len(seeds)} | "
                         f"{mean_std([with_d[s].get('before_' + k) for s in seeds])} | "
                         f"{mean_std([without[s].get(k) for s in seeds])} | "
                         f"{mean_std([with_d[s].get(k) for s in seeds])} | "
                         f"{signed_mean_std([with_d[s][k] - without[s][k] for s in seeds])} |")
    return lines


def cdtg_section(rows: list) -> list:
    if not rows:
        return []
    q = rows[0]
    pct = lambda key: "-" if q.get(key) is None else f"{100 * q[key]:.1f}"
    num = lambda key: "-" if q.get(key) is None else f"{q[key]:.2f}"
    return ["", (f"## CDTG: the generated tail images behind TGN (one generator, from seed {q['seed']}'s "
                 f"distilled tail model; mean over tail classes)"), "",
            "| share assigned to their class by | generated | real tail images |", "|---|---|---|",
            (f"| the distilled tail model | {pct('tail_model_consistency')} | "
             f"{pct('real_tail_model_consistency')} |"),
            (f"| the independent CE classifier | {pct('classifier_consistency')} | "
             f"{pct('real_classifier_consistency')} |"),
            f"| CLIP (tail-class prompts) | {pct('clip_consistency')} | {pct('real_clip_consistency')} |", "",
            (f"Feature diversity (CE classifier's features) {num('feature_diversity')} against "
             f"{num('real_feature_diversity')} for real images; FID_cls {num('fid')} (per class), pooled "
             f"{num('pooled_fid')}. Details: {os.path.join(q['folder'], 'quality.md')}; the curves during "
             f"training: {os.path.join(os.path.dirname(q['folder']), 'cdtg_train', 'quality.png')}.")]


def dsva_section(rows: list, split: str) -> list:
    if not rows:
        return []
    lines = ["", f"## DSVA: zero-shot on split {split} over seeds (CLIP fit and DSVA run; mean ± std, %)", "",
             "| method | seeds | ZSL acc | GZSL U | GZSL S | GZSL H |", "|---|---|---|---|---|---|"]
    for prefix, label in (("last", "DSVA, last epoch (epochs and gamma chosen on validation classes)"),
                          ("best_test", "DSVA, best epoch on test (upstream's selection)"),
                          ("clip", "plain CLIP zero-shot, same CLIPs (no calibration)")):
        lines.append(f"| {label} | {len(rows)} | " + " | ".join(
            mean_std([r.get(f"{prefix}_{k}") for r in rows]) for k in ("zsl", "u", "s", "h")) + " |")
    if all("epochs" in r for r in rows):
        lines += ["", "Per seed, DSVA's last epoch (epochs and gamma chosen on validation classes):", "",
                  "| seed | epochs | gamma | ZSL acc | GZSL U | GZSL S | GZSL H |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['seed']} | {r['epochs']} | {r['gamma']:g} | " + " | ".join(
            f"{100 * r[f'last_{k}']:.1f}" for k in ("zsl", "u", "s", "h")) + " |"
            for r in sorted(rows, key=lambda r: r["seed"])]
    return lines


def collect(chains: list, groups: dict) -> list:
    rows = []
    for job in (j for c in chains for j in c if j.extra and j.done):
        row = {**job.extra, "folder": job.folder}
        if job.extra["part"] == "longtail":
            row.update(longtail_metrics(read_json_if_present(job.marker), groups))
        elif job.extra["part"] == "cdtg":
            row.update(read_json_if_present(job.marker)["overall"])
        elif job.extra["part"] == "kmdn":
            s = read_json_if_present(job.marker)
            for part in ("head", "tail"):
                for k in ("oa", "macro_f1"):
                    row[f"{part}_{k}"] = s["after"][part][k]
                    row[f"before_{part}_{k}"] = s["before"][part][k]
        else:
            r = read_json_if_present(job.marker)
            for key in ("last", "best_test"):
                if r.get(key):
                    row.update({f"{key}_{k}": r[key][k] for k in ("zsl", "u", "s", "h")})
            if r.get("last") and "epoch" in r["last"]:
                row.update(epochs=r["last"]["epoch"] + 1, gamma=r["last"].get("gamma"))
            report = read_json_if_present(os.path.join(os.path.dirname(job.folder), "clip_report.json"))
            if report:
                z = report["zero_shot"]["name"]
                u, s = z["unseen_among_all"], z["seen_among_all"]
                row.update(clip_zsl=z["unseen_among_unseen"], clip_u=u, clip_s=s,
                           clip_h=2 * u * s / (u + s) if u and s and u + s else 0.0)
        rows.append(row)
    return rows


def write_csv(rows: list, path: str) -> None:
    first = ["part", "protocol", "method", "seed"]
    keys = first + sorted({k for r in rows for k in r} - {*first, "folder"}) + ["folder"]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})
    os.replace(tmp, path)


def groups_png(rows: list, methods: list, columns: list, path: str) -> None:
    from common.plots import plt
    cols = [(k, label) for k, label in columns if k.endswith("_acc")]
    present = [m for m in methods if any(r["method"] == m for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cols) * max(1, len(present)) / 3 + 3), 4))
    width = 0.8 / max(1, len(present))
    for i, m in enumerate(present):
        vals = [[r[k] for r in rows if r["method"] == m and r.get(k) is not None] for k, _ in cols]
        means = [100 * np.mean(v) if v else np.nan for v in vals]
        stds = [100 * np.std(v, ddof=1) if len(v) > 1 else 0 for v in vals]
        ax.bar(np.arange(len(cols)) + (i - (len(present) - 1) / 2) * width, means, width, yerr=stds,
               capsize=3, label=m)
    ax.set_xticks(range(len(cols)), [label for _, label in cols])
    ax.set_ylabel("mean per-class test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Per-group accuracy, mean ± std over seeds")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(args, chains: list, split: dict) -> str:
    train_counts = split["train_counts"]
    groups = count_groups(train_counts)
    rows = collect(chains, groups)
    columns = [(k, label) for k, label in LT_COLUMNS
               if not k.endswith(("many_acc", "medium_acc", "few_acc")) or k.split("_")[0] in groups]
    lt = [r for r in rows if r["part"] == "longtail"]
    lines = [f"# Benchmark on {split['dataset']} (seeds {' '.join(map(str, args.seeds))})", ""]
    if args.val_list:
        n_val, n_train = len(read_list(args.val_list)), len(read_list(args.lt_train_list))
        lines += [(f"Validation: {n_val} training images held out ({args.val_fraction:g} of each class, at "
                   f"least 1, at most {args.val_max}, one kept for training; {args.val_list}); the "
                   f"classifiers train on the other {n_train}."), ""]
    for i, protocol in enumerate(args.protocols):
        rs = [r for r in lt if r["protocol"] == protocol]
        if rs:
            lines += ([""] if i else []) + longtail_section(rs, args.methods, columns, groups, train_counts,
                                                            protocol)
            png = "long_tail_groups.png" if i == 0 else f"long_tail_groups_{protocol}.png"
            groups_png(rs, args.methods, columns, os.path.join(args.output_dir, png))
    if lt:
        if len(args.protocols) > 1:
            lines += protocols_section(lt, args.methods, args.protocols)
        lines += settings_section(args, lt, args.protocols)
    lines += cdtg_section([r for r in rows if r["part"] == "cdtg"])
    lines += kmdn_section([r for r in rows if r["part"] == "kmdn"])
    lines += dsva_section([r for r in rows if r["part"] == "dsva"], args.dsva_split)
    runs_csv = os.path.join(args.output_dir, "runs.csv")
    lines += ["", f"One row per run, with its folder (args.yaml inside): {runs_csv}."]
    text = "\n".join(lines) + "\n"
    write_csv(rows, os.path.join(args.output_dir, "runs.csv"))
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(text)
    return text

