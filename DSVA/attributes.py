"""The class x attribute matrix and its attribute groups: annotate.py's attributes.json/.npy or a released
.mat with 'att' (stored attributes x classes), and group files {group: [attribute indices or names]}."""
import os

import numpy as np

from common.errors import UserError
from common.jsonfile import read_json
from DSVA.matfile import mat_key, mat_strings, read_mat


def groups_to_indices(groups: dict, attr_names, source: str) -> dict:
    """{group: [names or indices]} -> {group: [indices]}."""
    index = {n: i for i, n in enumerate(attr_names or [])}
    out = {}
    for g, members in groups.items():
        ids = []
        for m in members:
            if isinstance(m, (int, np.integer)):
                ids.append(int(m))
            elif m in index:
                ids.append(index[m])
            else:
                raise UserError(f"{source}: group '{g}' names attribute '{m}', which is not an attribute "
                                "name")
        out[str(g)] = ids
    return out


def read_groups(path: str, attr_names, num_attributes: int) -> dict:
    doc = read_json(path, "attribute groups file")
    doc = doc.get("groups", doc) if isinstance(doc, dict) else doc
    if not isinstance(doc, dict):
        raise UserError(f"attribute groups file {path} must map group names to attribute lists")
    groups = groups_to_indices(doc, attr_names, path)
    bad = [i for ids in groups.values() for i in ids if not 0 <= i < num_attributes]
    if bad:
        raise UserError(f"{path}: attribute index {bad[0]} is outside 0..{num_attributes - 1}")
    return groups


def load_attributes(path: str, class_names: list) -> tuple:
    """(matrix [classes, attributes], attribute names or None, groups or None) from .json/.npy/.mat."""
    if not os.path.isfile(path):
        raise UserError(f"attributes file {path} does not exist; run DSVA/annotate.py or pass the released "
                        ".mat")
    names, attr_names, groups = None, None, None
    if path.endswith(".json"):
        doc = read_json(path, "attributes file", "run DSVA/annotate.py")
        try:
            matrix = np.asarray(doc["matrix"], dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path} is not an attributes.json written by DSVA/annotate.py (needs "
                            f"'matrix')") from None
        names, attr_names = doc.get("classes"), doc.get("attributes")
        if doc.get("groups"):
            if not isinstance(doc["groups"], dict):
                raise UserError(f"{path}: 'groups' must map group names to attribute lists")
            groups = groups_to_indices(doc["groups"], attr_names, path)
    elif path.endswith(".npy"):
        try:
            matrix = np.load(path).astype(np.float32)
        except (ValueError, OSError):
            raise UserError(f"{path} is not a numpy .npy file") from None
    elif path.endswith(".mat"):
        mat = read_mat(path, "attributes file")
        matrix = np.asarray(mat_key(mat, "att", path), dtype=np.float32)
        if "allclasses_names" in mat:
            names = mat_strings(mat["allclasses_names"])
        if "attri_name" in mat:
            attr_names = mat_strings(mat["attri_name"])
        if matrix.ndim == 2 and matrix.shape[1] == len(class_names):
            matrix = matrix.T  # upstream stores attributes x classes
    else:
        raise UserError(f"attributes file {path}: expected .json, .npy or .mat")
    if matrix.ndim != 2 or matrix.shape[0] != len(class_names):
        raise UserError(f"attributes file {path} has shape {matrix.shape}; expected {len(class_names)} "
                        f"classes x attributes for this data set")
    if names is not None and list(names) != list(class_names):
        diff = next(i for i, (a, b) in enumerate(zip(names, class_names)) if a != b) if len(names) == len(
            class_names) else 0
        raise UserError(f"attributes file {path} lists classes in another order or of another data set "
                        f"(class {diff}: '{names[diff]}' vs '{class_names[diff]}')")
    if not np.isfinite(matrix).all():
        raise UserError(f"attributes file {path} holds NaN or infinite values")
    return matrix, attr_names, groups
