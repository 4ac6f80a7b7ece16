"""common/resume.py, the one ckpt_last.pt path of the training loops: what save_last writes, LastCheckpoint
gives back (states, random state, position), the metrics rows it drops, and its one-line errors."""
import json
import random

import numpy as np
import pytest
import torch

from common import rundir
from common.errors import UserError
from common.resume import LastCheckpoint, save_last


def trained(seed: int):
    """A tiny model, its Adam after two steps, a step schedule and an fp16-style loss scaler with a state."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [1], 0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    for _ in range(2):
        optimizer.zero_grad()
        scaler.scale(model(torch.randn(4, 3)).square().mean()).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
    return model, optimizer, scheduler, scaler


def draws() -> tuple:
    return torch.rand(3), np.random.rand(), random.random()


def test_save_then_restore_gives_back_states_random_state_and_position(tmp_path, capsys):
    model, optimizer, scheduler, scaler = trained(0)
    states = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    written = save_last(str(tmp_path), True, states, epoch=4, history=[1, 2], args={"lr": 0.1})
    assert written["epoch"] == 4 and written["history"] == [1, 2] and written["args"] == {"lr": 0.1}
    expected = draws()
    assert save_last(str(tmp_path / "other"), False, states, epoch=4) is None  # not rank 0: nothing written
    assert not (tmp_path / "other").exists()

    fresh = trained(1)
    draws()  # move the random streams on
    last = LastCheckpoint(str(tmp_path))
    assert (last.position, last.done, last.start) == ("epoch", 4, 5) and last["history"] == [1, 2]
    start = last.restore(dict(zip(states, fresh)))
    assert start == 5
    assert capsys.readouterr().out == f"resumed from {tmp_path}/ckpt_last.pt at epoch 5\n"
    for a, b in zip(model.state_dict().values(), fresh[0].state_dict().values()):
        assert torch.equal(a, b)
    for name, obj in zip(states, fresh):
        if name == "optimizer":
            for (ka, sa), (kb, sb) in zip(optimizer.state.items(), obj.state.items()):
                assert all(torch.equal(sa[k], sb[k]) for k in sa)
        else:
            assert str(states[name].state_dict()) == str(obj.state_dict()), name
    assert fresh[3].get_scale() == scaler.get_scale()
    a, b = draws(), expected
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_dicts_of_states_iterations_and_an_empty_scaler(tmp_path):
    """KMDN/distill.py's {part: model}; CDTG's iteration counter; a scaler saved without loss scaling ({})."""
    models = {"head": torch.nn.Linear(2, 2), "tail": torch.nn.Linear(2, 3)}
    off = torch.amp.GradScaler("cpu", enabled=False)
    save_last(str(tmp_path), True, {"models": models, "scaler": off}, iteration=6)
    assert torch.load(tmp_path / "ckpt_last.pt", weights_only=False)["scaler"] == {}
    other = {"head": torch.nn.Linear(2, 2), "tail": torch.nn.Linear(2, 3)}
    on = torch.amp.GradScaler("cpu", init_scale=8.0)
    last = LastCheckpoint(str(tmp_path))
    assert last.restore({"models": other, "scaler": on}, is_main=False, rng=False) == 6  # iterations done
    assert torch.equal(other["tail"].weight, models["tail"].weight) and on.get_scale() == 8.0
    assert last.restore_rng() is True  # one process: its own state


@pytest.mark.parametrize("position,key,kept", [("epoch", "epoch", [0, 1]), ("iteration", "iter", [0, 1])])
def test_restore_drops_the_metrics_rows_after_the_saved_position(tmp_path, position, key, kept):
    log = rundir.MetricsLog(str(tmp_path))
    for step in range(4):  # a run that died after logging step 3 with its last checkpoint at 1
        log.write(**{key: step, "loss": 1.0 / (step + 1)})
    save_last(str(tmp_path), True, {}, **{position: 1})
    LastCheckpoint(str(tmp_path)).restore({}, log, is_main=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r[key] for r in rows] == kept


def test_missing_damaged_or_foreign_files_are_one_line(tmp_path):
    path = tmp_path / "ckpt_last.pt"
    with pytest.raises(UserError, match=f"^checkpoint {path} does not exist; check the path$"):
        LastCheckpoint(str(tmp_path))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=f"^--resume: distillation checkpoint {path} could not be read: it is "
                                        f"not a PyTorch checkpoint, or is damaged$"):
        LastCheckpoint(str(tmp_path), "--resume: distillation checkpoint")
    torch.save({"model": {}}, path)
    with pytest.raises(UserError, match=r"is not a training checkpoint of this repository .*--overwrite$"):
        LastCheckpoint(str(tmp_path))
    save_last(str(tmp_path), True, {}, epoch=0)
    with pytest.raises(UserError, match=f"^{path} holds no 'model' entry: it was written by another script"):
        LastCheckpoint(str(tmp_path)).restore({"model": torch.nn.Linear(2, 2)})
    with pytest.raises(ValueError, match="exactly one of epoch and iteration"):
        save_last(str(tmp_path), True, {}, epoch=0, iteration=0)
