"""Draw the curves of any run: every numeric column of RUN_DIR/metrics.jsonl against its step, one panel each.

    python scripts/plot_metrics.py runs/classification/dior/baseline            # -> RUN_DIR/metrics.png
    python scripts/plot_metrics.py RUN_DIR --keys loss test_acc --out curves.png
"""
import argparse
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STEP_KEYS = ("iter", "epoch", "step")


def fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def read_rows(path: str) -> list:
    if not os.path.isfile(path):
        fail(f"{path} does not exist; pass a run folder that holds metrics.jsonl")
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                fail(f"line {n} of {path} is not JSON; is the file damaged?")
            if isinstance(row, dict):
                rows.append(row)
    if not rows:
        fail(f"{path} holds no metrics yet")
    return rows


def curves(rows: list, keys=None) -> tuple[str, dict]:
    """(step key, {metric: ([steps], [values])}) for every numeric metric, or only `keys`."""
    step = next((k for k in STEP_KEYS if any(k in r for r in rows)), None)
    out = {}
    for i, r in enumerate(rows):
        x = r.get(step, i) if step else i
        for k, v in r.items():
            if k in STEP_KEYS or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                continue
            xs, ys = out.setdefault(k, ([], []))
            xs.append(x)
            ys.append(v)
    if keys:
        missing = [k for k in keys if k not in out]
        if missing:
            fail(f"no numeric column {', '.join(missing)} in the metrics; "
                             f"available: {', '.join(sorted(out)) or 'none'}")
    return step or "row", out


def plot(step: str, series: dict, path: str, title: str) -> None:
    n = len(series)
    cols = min(3, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3 * nrows), squeeze=False)
    for ax, (k, (xs, ys)) in zip(axes.flat, sorted(series.items())):
        ax.plot(xs, ys, marker="." if len(xs) < 60 else None)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel(step, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run folder holding metrics.jsonl")
    p.add_argument("--keys", nargs="+", default=None, help="only these columns (default: every numeric one)")
    p.add_argument("--out", default=None, help="PNG file (default: RUN_DIR/metrics.png)")
    args = p.parse_args(argv)
    step, series = curves(read_rows(os.path.join(args.run_dir, "metrics.jsonl")), args.keys)
    if not series:
        fail("the metrics hold no numeric column to draw")
    out = args.out or os.path.join(args.run_dir, "metrics.png")
    plot(step, series, out, os.path.normpath(args.run_dir))
    print(f"{len(series)} curves against {step} -> {out}")


if __name__ == "__main__":
    sys.exit(main())
