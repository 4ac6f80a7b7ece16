"""MATLAB files of the RSSDIVCS release and of released attribute matrices (read with scipy.io)."""
import os

import numpy as np

from common.errors import UserError


def read_mat(path: str, what: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist; download RSSDIVCS (files/*.mat) or pass the right "
                        "path")
    try:
        import scipy.io
    except ImportError:
        raise UserError("reading .mat files needs scipy; pip install scipy") from None
    try:
        return scipy.io.loadmat(path)
    # scipy raises ValueError/MatReadError/OSError for foreign files
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{what} {path} could not be read as a MATLAB file ({type(e).__name__})") from None


def mat_key(mat: dict, key: str, path: str):
    if key not in mat:
        keys = ", ".join(k for k in mat if not k.startswith("__"))
        raise UserError(f"{path} has no '{key}' (it holds: {keys}); is it the right RSSDIVCS file?")
    return mat[key]


def mat_strings(value) -> list:
    """MATLAB cell arrays / char matrices of strings as loaded by scipy -> [str]."""
    out = []
    for v in np.asarray(value, dtype=object).ravel():
        while isinstance(v, np.ndarray):
            v = v.ravel()[0] if v.size else ""
        out.append(str(v).strip())
    return out
