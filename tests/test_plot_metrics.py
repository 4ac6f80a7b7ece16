import json
import os

import pytest

from conftest import assert_one_line_error, run_script


@pytest.mark.slow
def test_plot_metrics_draws_every_numeric_column(tmp_path):
    rows = [{"epoch": e, "loss": 1.0 / (e + 1), "test_acc": 0.1 * e, "phase": "head"} for e in range(4)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run_script("scripts/plot_metrics.py", str(tmp_path))
    assert "2 curves against epoch" in proc.stdout
    assert os.path.getsize(tmp_path / "metrics.png") > 1000


def test_plot_metrics_names_a_missing_column(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"iter": 1, "d_loss": 0.5}) + "\n")
    proc = run_script("scripts/plot_metrics.py", str(tmp_path), "--keys", "g_loss", check=False)
    assert_one_line_error(proc, "g_loss", "d_loss")
    assert not (tmp_path / "metrics.png").exists()
