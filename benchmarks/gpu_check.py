"""One table of GPU speed figures and a one-epoch run of every stage, in about five minutes on one GPU.

    bash benchmarks/gpu_check.sh                        (CUDA; the embedded data set built in a temp folder)
    bash benchmarks/gpu_check.sh --device cpu --smoke   (tiny sizes on the CPU, to check that the check runs)

Every measurement is a separate process (benchmarks/*.py, the stage scripts) with its own time limit: a part
that fails, runs out of memory or out of time prints its error in its row and the check goes on. Nothing is
downloaded: models are randomly initialised (--weights none, open_clip architectures without weights).
Exit status: 0 when every row passed, 1 otherwise.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


class Check:
    """Runs one command per row under the remaining time budget and collects the table rows."""

    def __init__(self, budget: float, workdir: str, env: dict, stretch: float = 1.0):
        self.deadline = time.monotonic() + budget
        self.stretch = stretch  # row time limits x this (a CPU smoke run: process start-up dominates)
        self.workdir, self.env = workdir, env
        self.rows = []
        self.n = 0

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, args: list, limit: float) -> tuple:
        """(status, seconds, the JSON lines the command appended to its --json file or [], output tail)."""
        self.n += 1
        timeout = min(limit * self.stretch, self.left())
        if timeout < 1:
            return "skipped: the check's time budget is spent", 0.0, [], ""
        out = os.path.join(self.workdir, f"row{self.n}.jsonl")
        args = [a.replace("{json}", out) for a in args]
        t0 = time.monotonic()
        try:
            proc = subprocess.run([PY, *args], cwd=REPO, env=self.env, capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return f"timed out after {timeout:.0f} s", time.monotonic() - t0, [], ""
        seconds = time.monotonic() - t0
        text = proc.stdout + proc.stderr
        results = []
        if os.path.isfile(out):
            with open(out) as f:
                results = [json.loads(line) for line in f if line.strip()]
        if proc.returncode != 0:
            return f"exit {proc.returncode}: {last_error(text)}", seconds, results, text
        return "ok", seconds, results, text

    def row(self, part: str, setting: str, result: str = "", memory: str = "", status: str = "ok"):
        self.rows.append({"part": part, "setting": setting, "result": result, "memory": memory,
                          "status": status})
        print(f"  [{part}] {setting}: {result or '-'} {memory} ({status})", flush=True)


def last_error(text: str) -> str:
    """The most telling line of a failed command's output (the exception or 'error:' line)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error:") or "Error" in ln.split(":")[0] or "out of memory" in ln:
            return ln[:200]
    return (lines[-1] if lines else "no output")[:200]


def gib(r: dict) -> str:
    return f"{r['peak_gib']:.2f} GiB ({r['memory']})"


# ------------------------------------------------------------------------------------------------ parts


AMP_CL, COMPILED = "AMP + channels_last", "AMP + channels_last + compile"


def classifier(c: Check, dev: list, smoke: bool, speed: dict, compiled: bool) -> None:
    """ResNet-50 at 224 px: fp32 and AMP + channels_last at batch 128, AMP at 256 (compiled=False); then with
    --compile at 128, and at 256 if time is left, and the speed-ups over fp32 (compiled=True: compiling takes
    the longest, so it runs last, with what is left of the budget)."""
    model, size, big = ("resnet18", 32, 4) if smoke else ("resnet50", 224, 128)
    steps = ["--steps", "2", "--warmup", "1"] if smoke else ["--steps", "30", "--warmup", "5"]
    fp32 = ("fp32", big, ["--no-amp", "--no-channels-last"], 40)
    if compiled:
        flags = ["--compile", "--compile-backend", "eager"] if smoke else ["--compile"]
        todo = [(COMPILED, big, flags, 150)] + ([(COMPILED, 2 * big, flags, 150)] if not smoke else [])
    else:
        todo = [fp32] if smoke else [fp32, (AMP_CL, big, [], 40), (AMP_CL, 2 * big, [], 40)]  # no AMP on CPUs
    for name, batch, flags, limit in todo:
        setting = f"{model} {size} px, batch {batch}, {name}"
        if compiled and batch > big and c.left() < 100:
            c.row("classifier", setting, status="skipped: under 100 s of the budget left")
            continue
        status, _, res, _ = c.run(["benchmarks/classifier_throughput.py", "--model", model, "--img-size",
                                   str(size), "--batch-size", str(batch), *steps, *flags, *dev,
                                   "--json", "{json}"], limit)
        if res and status == "ok":
            speed[(batch, name)] = res[-1]["images_per_s"]
            c.row("classifier", setting, f"{res[-1]['images_per_s']:.0f} images/s" + compile_facts(res[-1]),
                  gib(res[-1]))
        else:
            c.row("classifier", setting, status=status)
    if compiled:
        base = speed.get((big, "fp32"))
        for batch, name in sorted(k for k in speed if k[1] != "fp32"):
            if base:
                c.row("classifier", f"batch {batch}, {name}: speed-up over fp32 at batch {big}",
                      f"{speed[(batch, name)] / base:.2f}x")


def compile_facts(result: dict) -> str:
    """What torch.compile did (from classifier_throughput's report): where a compiled run is slower than
    eager, this says whether compile time, graph breaks or recompilation explain it."""
    info = result.get("compiled")
    if not info:
        return ""
    return (f" (compiled in the {result['warmup_seconds']:.0f} s warm-up, outside the timed steps: "
            f"{info['graphs']} graph(s), {info['graph_breaks']} graph break(s), {info['recompiles']} "
            "recompile(s))")


def data_path(c: Check, dev: list, smoke: bool, data: str, speed: dict) -> None:
    """JPEG files -> common.datasets.ImageList + the classification transforms -> DataLoader, alone and
    feeding the model (AMP + channels_last)."""
    workers = "0" if smoke else str(min(16, os.cpu_count() or 1))
    model, size, batch = ("resnet18", "32", "4") if smoke else ("resnet50", "224", "128")
    steps = ["--steps", "2", "--warmup", "1"] if smoke else ["--steps", "30", "--warmup", "3"]
    common = ["benchmarks/classifier_throughput.py", "--source", "files", "--data-root", data,
              "--img-size", size, "--batch-size", batch, "--workers", workers, *steps, *dev,
              "--json", "{json}"]
    for label, flags in (("loader alone", ["--loader-only"]),
                         (f"{model} training from files", ["--model", model])):
        setting = f"{label}, {size} px, batch {batch}, {workers} workers"
        status, _, res, _ = c.run(common + flags, 60)
        if res and status == "ok":
            note = ""
            tensors = speed.get((int(batch), AMP_CL)) or speed.get((int(batch), "fp32"))
            if tensors and label != "loader alone":
                note = f" ({res[-1]['images_per_s'] / tensors:.2f}x the speed on in-memory tensors)"
            c.row("data path", setting, f"{res[-1]['images_per_s']:.0f} images/s{note}", gib(res[-1]))
        else:
            c.row("data path", setting, status=status)


def cdtg(c: Check, dev: list, smoke: bool) -> None:
    """One CDTG iteration (G and D steps, tail-model and CLIP losses; lazy R1 every 16 and path length every 4
    are inside the 16 timed iterations)."""
    if smoke:
        flags = ["--size", "32", "--batch", "2", "--style-dim", "16", "--n-mlp", "1", "--max-channels", "8",
                 "--label-dim", "8", "--tail-arch", "resnet18", "--tail-size", "32", "--classes", "3",
                 "--lambda-clip", "0", "--warmup", "1", "--iters", "4"]
        setting = "32 px, batch 2, tiny widths, no CLIP"
    else:
        flags = ["--size", "256", "--batch", "8", "--warmup", "2", "--iters", "16"]
        setting = "256 px, batch 8, paper config (ResNet-50 tail model, P on layer3, ViT-B-32)"
    label = f"{setting}, AMP"
    status, _, res, _ = c.run(["benchmarks/cdtg_step.py", *flags, "--amp", *dev, "--json", "{json}"], 90)
    if res and status == "ok":
        c.row("CDTG", label, f"{res[-1]['sec_per_it']:.3f} s/iteration", gib(res[-1]))
    else:
        c.row("CDTG", label, status=status)


def dsva(c: Check, dev: list, smoke: bool) -> None:
    flags = ["--tiny", "--batch-size", "4", "--steps", "2", "--warmup", "1"] if smoke else []
    batches = ["4"] if smoke else ["24", "128"]
    for batch in batches:
        model = "tiny ViT 32 px" if smoke else "ViT-B/32 224 px"
        setting = f"{model}, batch {batch}, AMP"
        status, _, res, _ = c.run(["benchmarks/dsva_throughput.py", *flags, "--batch-size", batch, *dev,
                                   "--json", "{json}"], 40)
        if res and status == "ok":
            c.row("DSVA", setting, f"{res[-1]['images_per_s']:.0f} images/s", gib(res[-1]))
        else:
            c.row("DSVA", setting, status=status)


def stage_commands(data: str, runs: str, dev: list, smoke: bool) -> list:
    """(name, argv) of every stage for one epoch (CDTG: a few iterations) on the embedded set."""
    cfg = ["--config", "configs/synthetic.yaml", "--data-root", data]
    small = ["--img-size", "32", "--batch-size", "8", "--workers", "0"] if smoke else ["--workers", "4"]
    clip_steps = ["--steps", "3", "--batch-size", "16"]
    dsva_clip = ["--clip-pretrained", f"{runs}/clip_dsva.pt"]
    r = lambda name: f"{runs}/{name}"
    cls_final = f"{r('classification')}/model_final.pt"
    return [
        ("fit the small CLIPs (CPU), seen classes",
         ["data/synthetic/train_clip.py", "--data-root", data, "--out", r("clip_dsva.pt"),
          "--exclude-unseen", "43", *clip_steps]),
        ("fit the small CLIPs (CPU), all classes",
         ["data/synthetic/train_clip.py", "--data-root", data, "--out", r("clip_all.pt"), "--all-classes",
          *clip_steps]),
        ("Classification/train.py", ["Classification/train.py", *cfg, *small, "--epochs", "1",
                                     "--output-dir", r("classification"), *dev]),
        ("Classification/test.py", ["Classification/test.py", "--weights", cls_final, "--data-root", data,
                                    *dev]),
        ("KMDN/train.py --part head", ["KMDN/train.py", "--part", "head", *cfg, *small, "--epochs", "1",
                                       "--output-dir", r("kmdn/head"), *dev]),
        ("KMDN/train.py --part tail", ["KMDN/train.py", "--part", "tail", *cfg, *small, "--epochs", "1",
                                       "--output-dir", r("kmdn/tail"), *dev]),
        ("KMDN/distill.py", ["KMDN/distill.py", *cfg, "--epochs", "2", "--interval", "1", "--workers", "0",
                             "--head-init", f"{r('kmdn/head')}/model_final.pt",
                             "--tail-init", f"{r('kmdn/tail')}/model_final.pt",
                             "--output-dir", r("kmdn/distill"), *dev]),
        ("KMDN/test.py", ["KMDN/test.py", "--weights", f"{r('kmdn/distill')}/head_model.pt",
                          f"{r('kmdn/distill')}/tail_model.pt", "--data-root", data, *dev]),
        ("CDTG/train.py", ["CDTG/train.py", *cfg, "--tail-model", f"{r('kmdn/distill')}/tail_model.pt",
                           "--clip-pretrained", r("clip_all.pt"), "--iter", "8", "--log-every", "4",
                           "--sample-every", "8", "--ckpt-every", "8", "--output-dir", r("cdtg"), *dev]),
        ("CDTG/generate.py", ["CDTG/generate.py", "--config", "configs/synthetic.yaml", "--weights",
                              f"{r('cdtg')}/generator.pt", "--n-per-class", "4", "--workers", "0",
                              "--output-dir", r("generated"), *dev]),
        ("CDTG/expand.py", ["CDTG/expand.py", "--generated", r("generated"), "--out", r("expanded_train.txt"),
                            "--data-root", data]),
        ("CDTG/evaluate.py", ["CDTG/evaluate.py", "--config", "configs/synthetic.yaml", "--generated",
                              r("generated"), "--classifier", cls_final,
                              "--clip-pretrained", r("clip_all.pt"), *dev]),
        ("Classification/train.py (+ generated)", ["Classification/train.py", *cfg, *small, "--epochs", "1",
                                                   "--train-list", f"{data}/anno/SYNTH_train.txt",
                                                   "--train-list", r("expanded_train.txt"),
                                                   "--output-dir", r("classification_tgn"), *dev]),
        ("DSVA/annotate.py", ["DSVA/annotate.py", "--config", "configs/synthetic.yaml", "--data-root", data,
                              *dsva_clip, "--images-per-class", "4", "--output-dir", r("dsva_annotate"),
                              *dev]),
        ("DSVA/train.py", ["DSVA/train.py", "--config", "configs/synthetic.yaml", "--data-root", data,
                           *dsva_clip, "--attributes", f"{r('dsva_annotate')}/attributes.json",
                           "--epochs", "1", "--pretrain-epoch", "0", "--batches-per-epoch", "2",
                           "--output-dir", r("dsva"), *dev]),
        ("DSVA/test.py", ["DSVA/test.py", "--weights", f"{r('dsva')}/model_final.pt", *dev]),
    ]


def stages(c: Check, dev: list, smoke: bool, data: str) -> None:
    runs = os.path.join(c.workdir, "runs")
    failed = None
    for name, argv in stage_commands(data, runs, dev, smoke):
        label = name
        if failed:
            c.row("stages", label, status=f"not run: {failed} failed")
            continue
        status, seconds, _, _ = c.run(argv, 120)  # x 4 in a CPU smoke run: 8 minutes on a slow hour
        c.row("stages", label, f"{seconds:.1f} s" if status == "ok" else "", status=status if status != "ok"
              else "exit 0")
        if status != "ok":
            failed = label


# ------------------------------------------------------------------------------------------------ main


def get_args_parser():
    p = argparse.ArgumentParser("GPU check: speed table and a one-epoch run of every stage")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on a CPU: checks the check itself")
    p.add_argument("--budget", type=float, default=300, help="seconds for the whole check, data set included")
    p.add_argument("--parts", nargs="+", default=["classifier", "data", "cdtg", "dsva", "stages"],
                   choices=["classifier", "data", "cdtg", "dsva", "stages"])
    p.add_argument("--workdir", default=None,
                   help="keep the data set and runs here (default: a temporary folder, removed at the end)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return p


def table(rows: list) -> str:
    lines = ["| part | setting | result | peak memory | status |", "|---|---|---|---|---|"]
    lines += [f"| {r['part']} | {r['setting']} | {r['result']} | {r['memory']} | {r['status']} |"
              for r in rows]
    return "\n".join(lines)


def device_name(device: str) -> str:
    import torch
    if device == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"{p.name} ({p.total_memory / 2 ** 30:.0f} GiB, compute capability {p.major}.{p.minor})"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def main(args) -> int:
    import torch
    start = time.monotonic()
    workdir = args.workdir or tempfile.mkdtemp(prefix="gpu_check_")
    os.makedirs(workdir, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1"}
    if args.smoke:
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    c = Check(args.budget, workdir, env, stretch=4 if args.smoke else 1)
    dev = ["--device", args.device]
    print(f"GPU check on {device_name(args.device)}, torch {torch.__version__}, work folder {workdir}",
          flush=True)
    data = os.path.join(workdir, "data")
    prep = ["--classes", "10", "--n-max", "40", "--n-test", "4", "--size", "32"] if args.smoke else []
    status, seconds, _, _ = c.run(["data/synthetic/prepare.py", "--output-dir", data, "--overwrite", *prep],
                                  60)
    if status == "ok":
        status, seconds2, _, _ = c.run(["data/split.py", "--data-root", data, "--head-percent", "40"], 30)
        seconds += seconds2
    c.row("data set", "embedded set: prepare.py + split.py", f"{seconds:.1f} s", status=status)
    speed = {}
    if "classifier" in args.parts:
        classifier(c, dev, args.smoke, speed, compiled=False)
    if "data" in args.parts and status == "ok":
        data_path(c, dev, args.smoke, data, speed)
    if "cdtg" in args.parts:
        cdtg(c, dev, args.smoke)
    if "dsva" in args.parts:
        dsva(c, dev, args.smoke)
    if "stages" in args.parts and status == "ok":
        stages(c, dev, args.smoke, data)
    if "classifier" in args.parts:
        classifier(c, dev, args.smoke, speed, compiled=True)
    ok = all(r["status"] in ("ok", "exit 0") for r in c.rows)
    print()
    sizes = "smoke sizes, " if args.smoke else ""
    seconds = time.monotonic() - start
    print(f"GPU check: {device_name(args.device)}, torch {torch.__version__}, {sizes}{seconds:.0f} s")
    print(table(c.rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name(args.device), "torch": torch.__version__, "smoke": args.smoke,
                       "rows": c.rows}, f, indent=1)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
