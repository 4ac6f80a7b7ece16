"""Evaluation outputs that say whether they are finished: the stage writes its marker file (a JSON report)
last and atomically, with the settings it was made with, so that running the same command again either finds
it finished (nothing to do) or, after an interruption, does the work again.
"""
import hashlib
import json
import os

from common.errors import UserError

# Flags that change where or how fast a result is computed, not the result
NOT_SETTINGS = ("workers", "device", "overwrite", "config", "stage", "output_dir", "batch_size",
                "eval_batch_size", "report_to", "trust_checkpoint")


def _files(value) -> list:
    values = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in values if isinstance(v, str) and os.path.isfile(v)]


def settings_of(args, ignore=()) -> dict:
    """The flags of `args` that shape the result (JSON values), and the content hash of every input file they
    name (under 'input_files')."""
    doc = json.loads(json.dumps({k: v for k, v in sorted(vars(args).items())
                                 if k not in NOT_SETTINGS and k not in ignore}, default=str))
    doc["input_files"] = file_stamps(*(p for v in doc.values() for p in _files(v)))
    return doc


def file_stamps(*paths: str) -> dict:
    """{absolute path: SHA-1 of its bytes}: a file replaced under the same name by another is noticed (one
    rewritten with the same bytes, e.g. re-exported by a resumed finished run, is not)."""
    return {os.path.abspath(p): _sha1(p) for p in paths}


def _sha1(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def already_finished(path: str, settings: dict, overwrite: bool) -> bool:
    """True (and a note) when `path` was written with `settings`: the work is done. False when it is absent,
    when --overwrite asks for it again, or when an input file changed since (a note says so). Other flags than
    the file's are refused, naming them: its result is kept unless --overwrite."""
    if overwrite or not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f).get("settings")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if not isinstance(recorded, dict):
        raise UserError(f"{path} already exists (its settings are not recorded in it); pass --overwrite to "
                        f"replace it, or choose another output")
    changed = [f"--{k.replace('_', '-')} {settings[k]!r} (it has {recorded[k]!r})" for k in sorted(settings)
               if k != "input_files" and k in recorded and settings[k] != recorded[k]]
    if changed:
        raise UserError(f"{path} already holds the result of other settings: {'; '.join(changed)}; pass "
                        f"--overwrite to replace it, or choose another output")
    moved = sorted(p for p, stamp in settings["input_files"].items() if recorded.get("input_files", {}).get(p)
                   != stamp)
    if moved:
        print(f"note: {moved[0]} changed since {path} was written; computing it again")
        return False
    print(f"{path} is already finished with these settings; nothing to do (--overwrite computes it again)")
    return True


def write_json_last(path: str, doc: dict) -> None:
    """Write the marker file atomically (temporary file, then rename): it exists only when complete."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)
