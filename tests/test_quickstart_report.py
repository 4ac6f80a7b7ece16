"""scripts/quickstart_report.py: the table rows of the post-hoc methods and the time per step."""
import importlib.util
import json
import os
import sys

SPEC = importlib.util.spec_from_file_location(
    "quickstart_report", os.path.join(os.path.dirname(__file__), "..", "scripts", "quickstart_report.py"))
quickstart_report = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(quickstart_report)


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))


def result(oa, head, tail, per_class):
    return {"oa": oa, "macro_f1": oa - 0.01, "head_acc": head, "tail_acc": tail, "per_class_acc": per_class,
            "names": ["a", "b", "c"]}


def test_post_hoc_rows_and_times(tmp_path, monkeypatch):
    out, data = tmp_path / "runs", tmp_path / "data"
    write(str(data / "split.json"), {"head": [0], "tail": [1, 2], "train_counts": [50, 5, 2]})
    write(str(out / "classification_baseline" / "results.json"), result(0.8, 0.95, 0.70, [0.95, 0.8, 0.6]))
    write(str(out / "classification_la1" / "results.json"), result(0.85, 0.90, 0.825, [0.9, 0.85, 0.8]))
    write(str(out / "classification_taunorm1" / "results.json"), result(0.82, 0.93, 0.75, [0.93, 0.8, 0.7]))
    write(str(out / "times.tsv"),
          "step\twall_s\tuser_s\tsys_s\nprepare\t8.1\t3.5\t0.5\nkmdn_head\t40.4\t30\t2\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv",
                        ["quickstart_report.py", "--output-dir", str(out), "--data-root", str(data)])
    quickstart_report.main()
    text = (out / "results.md").read_text()
    assert "| baseline (original train set) | 80.0 | 79.0 | 95.0 | 70.0 |" in text
    assert "| baseline + logit adjustment, post hoc (tau 1) | 85.0 | 84.0 | 90.0 | 82.5 |" in text
    assert "| baseline + tau-normalisation, post hoc (tau 1) | 82.0 | 81.0 | 93.0 | 75.0 |" in text
    assert "TGN (original" not in text  # no TGN run: no row
    assert "| class | part | train images | baseline | + logit adj. | + tau-norm | TGN |" in text
    assert "| c | tail | 2 | 60.0 | 80.0 | 70.0 | - |" in text
    assert "| prepare | 8 | 4 |" in text and "| kmdn_head | 40 | 32 |" in text
    assert "| all steps | 48 | 36 |" in text
