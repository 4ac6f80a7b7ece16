"""benchmarks/gpu_check.py: its row runner (time limits, failures in their rows), the stage list, and the CPU
smoke run of the whole check (tiny sizes), so that the GPU check does not rot while no GPU is at hand."""
import importlib.util
import json
import os

import pytest

from conftest import REPO, run_script

STAGE_SCRIPTS = ["Classification/train.py", "Classification/test.py", "KMDN/train.py", "KMDN/distill.py",
                 "KMDN/test.py", "CDTG/train.py", "CDTG/generate.py", "CDTG/expand.py", "CDTG/evaluate.py",
                 "DSVA/annotate.py", "DSVA/train.py", "DSVA/test.py"]


def load_benchmark(name: str):
    """A benchmarks/ script as a module (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    return load_benchmark("gpu_check")


@pytest.mark.slow
def test_rows_report_time_limits_failures_and_results(gpu_check, tmp_path):
    c = gpu_check.Check(60, str(tmp_path), dict(os.environ))
    assert c.run(["-c", "import time; time.sleep(30)"], 2)[0] == "timed out after 2 s"
    status, _, _, _ = c.run(["-c", "import sys; print('noise'); sys.exit('error: --x must be positive')"], 20)
    assert status == "exit 1: error: --x must be positive"
    status, _, _, _ = c.run(["-c", "raise MemoryError('CUDA out of memory. Tried to allocate 2 GiB')"], 20)
    assert status == "exit 1: MemoryError: CUDA out of memory. Tried to allocate 2 GiB"
    write = "import json, sys; open(sys.argv[1], 'a').write(json.dumps({'v': 3}) + '\\n')"
    status, _, res, _ = c.run(["-c", write, "{json}"], 20)
    assert (status, res) == ("ok", [{"v": 3}])
    spent = gpu_check.Check(0, str(tmp_path), dict(os.environ))
    assert spent.run(["-c", "pass"], 10) == ("skipped: the check's time budget is spent", 0.0, [], "")


def test_table_has_one_line_per_row(gpu_check, tmp_path):
    c = gpu_check.Check(10, str(tmp_path), {})
    c.row("classifier", "resnet50 224 px, batch 128, fp32", "900 images/s", "10.00 GiB (CUDA allocator)")
    c.row("stages", "KMDN/test.py", status="timed out after 60 s")
    lines = gpu_check.table(c.rows).splitlines()
    assert lines[2] == ("| classifier | resnet50 224 px, batch 128, fp32 | 900 images/s "
                        "| 10.00 GiB (CUDA allocator) | ok |")
    assert lines[3] == "| stages | KMDN/test.py |  |  | timed out after 60 s |"
    assert len(lines) == 4


def test_every_stage_script_runs_once_per_check_with_the_chosen_device(gpu_check):
    commands = gpu_check.stage_commands("D", "R", ["--device", "cuda"], smoke=False)
    scripts = [argv[0] for _, argv in commands]
    assert set(STAGE_SCRIPTS) <= set(scripts)
    for script in scripts:
        assert os.path.isfile(os.path.join(REPO, script)), script
    for _, argv in commands:
        if argv[0] not in ("CDTG/expand.py", "data/synthetic/train_clip.py"):  # CPU-only tools
            assert argv[-2:] == ["--device", "cuda"], argv
    assert all(name for name, _ in commands)


@pytest.mark.slow
@pytest.mark.parametrize("parts", [["classifier", "data", "cdtg", "dsva"], ["stages"]])
def test_cpu_smoke_run_passes_every_row(tmp_path, parts):
    out = tmp_path / "check.json"
    proc = run_script("benchmarks/gpu_check.py", "--device", "cpu", "--smoke", "--budget", "1500", "--parts",
                      *parts, "--json", str(out), timeout=1600)  # idle: about 1 min each; loaded: up to 15
    with open(out) as f:
        rows = json.load(f)["rows"]
    bad = [r for r in rows if r["status"] not in ("ok", "exit 0")]
    assert not bad, bad
    assert proc.stdout.count("| part | setting |") == 1  # one table
    names = {r["part"] for r in rows}
    if parts == ["stages"]:
        assert {r["setting"] for r in rows} >= {"Classification/train.py", "DSVA/test.py", "CDTG/train.py"}
        assert len(rows) == 1 + len(STAGE_SCRIPTS) + 4  # data set, 2 CLIP fits, KMDN tail, 2nd classifier
    else:
        assert names == {"data set", "classifier", "data path", "CDTG", "DSVA"}
        assert all(r["result"] for r in rows)


@pytest.mark.slow
def test_gpu_cdtg_smoke_run_on_the_cpu(tmp_path):
    """benchmarks/gpu_cdtg.sh --device cpu --smoke: every FIR implementation, the G + D variants and the CDTG
    iteration per phase run through and land in the table and the JSON file."""
    out = tmp_path / "cdtg.json"
    proc = run_script("benchmarks/gpu_cdtg.py", "--device", "cpu", "--smoke", "--json", str(out), timeout=600)
    result = json.loads(out.read_text())
    assert {r["impl"] for r in result["fir"]} == {"reference", "depthwise", "separable", "adjoint",
                                                  "adjoint (channels_last)"}
    assert all(r["fwd_bwd_ms"] > 0 and r["fwd_double_bwd_ms"] > 0 for r in result["fir"])
    assert len(result["g_d"]) == 5 and all(len(r["ms"]) == 2 for r in result["g_d"])
    iterations = result["iteration"]
    assert len(iterations) == 2  # the compiled settings are skipped on a smoke run
    for run in iterations.values():
        phases = run["profile"]["phases"]
        assert {"d_step", "r1", "g_forward", "consistency", "g_backward", "g_optim", "path_length",
                "ema"} <= set(phases)
        assert set(run["profile"]["kinds"]) == {"plain", "path length", "R1 + path length"}
        assert run["loop"]["sec_per_it"] > 0
    assert "top by CPU time" in result["top_kernels"] and "h for 200,000 iterations" in proc.stdout
