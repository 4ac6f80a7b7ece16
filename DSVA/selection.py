"""Honest model selection: the number of epochs and the calibrated-stacking gamma, chosen on validation runs
(seen classes held out as pseudo-unseen ones, DSVA/sources.carve_validation), never on the test set.

Every validation run stores its validation curve in results.json ("validation_curve": per epoch, ZSL accuracy
and U, S, H for every gamma of its grid). With several runs (folds: other held-out classes) the curves are
averaged: for each epoch, gamma = the grid value with the best mean H; the epoch = the best mean ZSL accuracy
(--setting zsl) or the best mean H (gzsl), the first of equal ones, among epochs min_epochs - 1 and later
(fewer when the runs are shorter). One run gives its own best validation epoch.
"""
import os

import numpy as np

from common.errors import UserError
from common.jsonfile import read_json


def read_curve(run: str) -> list:
    """The validation curve of a finished validation run (its results.json)."""
    path = os.path.join(run, "results.json")
    if not os.path.isfile(path):
        raise UserError(f"--val-run: {path} does not exist; finish the validation run (--val-classes) first")
    res = read_json(path, "--val-run: results file", expect=dict)
    curve = res.get("validation_curve")
    if not curve:
        raise UserError(f"--val-run: {path} has no validation curve; that run needs --val-classes (re-run it "
                        f"with this version of DSVA/train.py)")
    return curve


def sweep_of(row: dict) -> dict:
    """{gamma: figures} of one epoch of a curve (the run's one gamma when it had no grid)."""
    return {r["gamma"]: r for r in row.get("sweep") or [{"gamma": row["gamma"], **row}]}


def first_epoch(min_epochs: int, epochs: int) -> int:
    """The earliest epoch (0-based) the validation may choose: training at least min_epochs epochs."""
    return max(0, min(min_epochs, epochs) - 1)


def choose(curves: list, setting: str, min_epochs: int = 0) -> dict:
    """{'epoch', 'gamma', 'zsl', 'h', 'folds'}: the epoch and gamma with the best mean validation figures."""
    epochs = min(len(c) for c in curves)
    best = None
    for e in range(first_epoch(min_epochs, epochs), epochs):
        sweeps = [sweep_of(c[e]) for c in curves]
        gammas = [g for g in sweeps[0] if all(g in s for s in sweeps)]
        if not gammas:
            raise UserError("--val-run: the validation runs share no gamma; give them the same "
                            "--val-gamma-grid")
        mean_h = [float(np.mean([nan0(s[g]["h"]) for s in sweeps])) for g in gammas]
        i = int(np.argmax(mean_h))
        zsl = float(np.mean([nan0(c[e]["zsl"]) for c in curves]))
        row = {"epoch": e, "gamma": float(gammas[i]), "zsl": zsl, "h": mean_h[i], "folds": len(curves),
               "u": float(np.mean([nan0(s[gammas[i]]["u"]) for s in sweeps])),
               "s": float(np.mean([nan0(s[gammas[i]]["s"]) for s in sweeps]))}
        score = row["h"] if setting == "gzsl" else zsl
        if best is None or score > best[0]:
            best = (score, row)
    return best[1]


def nan0(v) -> float:
    return 0.0 if v is None or np.isnan(v) else float(v)


def epochs_and_gamma_from(runs: list, setting: str, min_epochs: int = 0) -> tuple:
    """(chosen epoch + 1, gamma, the choice) from one or more validation runs' folders."""
    pick = choose([read_curve(r) for r in runs], setting, min_epochs)
    return pick["epoch"] + 1, pick["gamma"], pick
