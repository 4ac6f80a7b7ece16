"""The generator file: written with paths relative to its folder, read back with them resolved, tag
checked."""
import os

import pytest
import torch

from CDTG import generator_file
from common.errors import UserError


def meta(data_root, tail_model):
    return {"dataset": "SYNTH", "data_root": data_root, "tail_model": tail_model, "classes": [3, 7],
            "names": ["a", "b"], "iteration": 5}


def test_paths_are_stored_relative_and_read_back_absolute(tmp_path):
    data, run = tmp_path / "data" / "processed", tmp_path / "runs" / "cdtg"
    data.mkdir(parents=True)
    run.mkdir(parents=True)
    path = run / "generator.pt"
    generator_file.write(str(path), {"w": torch.ones(2)}, None, meta(str(data), str(run / "tail_model.pt")))
    stored = torch.load(path, weights_only=True)["meta"]
    assert stored["format"] == generator_file.FORMAT
    assert stored["data_root"] == os.path.join("..", "..", "data", "processed")
    assert stored["tail_model"] == "tail_model.pt"
    moved = tmp_path / "moved"
    os.rename(tmp_path / "runs", moved)  # the run folder moves; relative paths follow it
    g_state, p_state, read = generator_file.read(str(moved / "cdtg" / "generator.pt"))
    assert torch.equal(g_state["w"], torch.ones(2)) and p_state is None
    assert read["tail_model"] == str(moved / "cdtg" / "tail_model.pt")
    assert read["data_root"] == os.path.normpath(str(moved / ".." / "data" / "processed"))
    assert read["classes"] == [3, 7] and read["iteration"] == 5


def test_another_format_is_refused_by_name(tmp_path):
    path = tmp_path / "generator.pt"
    torch.save({"g_ema": {}, "P_ema": None, "meta": {**meta(None, None), "format": "cdtg-generator-v0"}},
               path)
    with pytest.raises(UserError, match=r"format 'cdtg-generator-v0'.*reads 'cdtg-generator-v1'"):
        generator_file.read(str(path))


def test_a_file_of_something_else_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": {"w": torch.ones(1)}}, path)
    with pytest.raises(UserError, match="is not a CDTG generator"):
        generator_file.read(str(path))
