"""--report-to tensorboard: every metrics.jsonl row mirrored as TensorBoard scalars; metrics.jsonl stays the
record."""
import json
import sys

import numpy as np
import pytest

from Classification import train as classification_train
from common import rundir
from common.dashboard import TensorBoard
from conftest import assert_one_line_error, run_main

TINY = ["--model", "resnet18", "--weights", "none", "--img-size", "32", "--batch-size", "16", "--workers",
        "0", "--lr-drop-epochs", "1", "--device", "cpu"]


def scalars(folder) -> dict:
    """{tag: [(step, value)]} of the events files in `folder`, read back as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def as_float32(rows, key, step="epoch"):
    return [(r[step], float(np.float32(r[key]))) for r in rows]  # TensorBoard stores float32


@pytest.mark.slow
def test_classification_run_mirrors_metrics_to_tensorboard(synth_root, tmp_path):
    out = tmp_path / "run"
    run_main(classification_train, "classification", "--data-root", synth_root, "--output-dir", out, *TINY,
             "--epochs", "2", "--report-to", "tensorboard")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    got = scalars(out / "tensorboard")
    numeric = sorted(k for k, v in rows[0].items() if k != "epoch" and isinstance(v, (int, float)))
    assert {"lr", "train_loss", "train_acc", "test_oa"} <= set(numeric)
    assert sorted(got) == numeric
    for key in numeric:
        assert got[key] == as_float32(rows, key), key


def test_report_to_tensorboard_without_the_package_is_one_line(synth_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` then raises ImportError
    out = tmp_path / "run"
    proc = run_main(classification_train, "classification", "--data-root", synth_root, "--output-dir", out,
                    *TINY, "--epochs", "1", "--report-to", "tensorboard", check=False)
    assert_one_line_error(proc, "--report-to tensorboard needs the tensorboard package",
                          "pip install tensorboard")
    assert not out.exists()  # refused before the run folder was made


def test_resume_drops_the_rows_and_steps_after_the_checkpoint(tmp_path):
    """A run died after logging iterations 1-3 with its last checkpoint at 2: on resume metrics.jsonl and the
    dashboard keep 1-2 and show the resumed run's 3."""
    log = rundir.MetricsLog(str(tmp_path), report_to="tensorboard")
    for i in (1, 2, 3):
        log.write(iter=i, g_loss=float(i), note="text is not a scalar")
    log.close()
    log = rundir.MetricsLog(str(tmp_path), report_to="tensorboard")
    log.truncate_after(2, key="iter")
    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iter"] for line in rows] == [1, 2]
    log.write(iter=3, g_loss=30.0)
    log.close()
    assert [json.loads(line)["g_loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == \
        [1.0, 2.0, 30.0]
    assert scalars(tmp_path / "tensorboard") == {"g_loss": [(1, 1.0), (2, 2.0), (3, 30.0)]}


def test_truncate_after_epoch_keeps_rows_without_the_key_and_skips_broken_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"note": 1}\n{"epoch": 1}\n{"epoch": 2}\n{"epo')
    rundir.MetricsLog(str(tmp_path)).truncate_after(1)
    assert [json.loads(line) for line in path.read_text().splitlines()] == \
        [{"epoch": 0}, {"note": 1}, {"epoch": 1}]
    rundir.MetricsLog(str(tmp_path), enabled=False).truncate_after(0)  # not the main process: leaves it alone
    assert len(path.read_text().splitlines()) == 3


def test_dashboard_skips_non_finite_and_non_numeric_values(tmp_path):
    board = TensorBoard(str(tmp_path))
    board.write({"step": 5, "loss": float("nan"), "acc": 0.5, "ok": True, "phase": "head"})
    board.write({"loss": 2.0})  # no step column: the row count
    board.close()
    assert scalars(tmp_path / "tensorboard") == {"acc": [(5, 0.5)], "loss": [(1, 2.0)]}


@pytest.mark.parametrize("script", ["Classification/train.py", "Classification/crt.py", "KMDN/train.py",
                                    "KMDN/distill.py", "CDTG/train.py", "DSVA/train.py"])
def test_every_training_script_takes_report_to(script):
    from common.flags import script_parser
    action = next(a for a in script_parser(script)._actions if "--report-to" in a.option_strings)
    assert action.default == "none" and tuple(action.choices) == ("none", "tensorboard")
