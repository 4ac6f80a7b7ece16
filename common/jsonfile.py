"""Reading a user's JSON file with one-line errors."""
import json
import os

from common.errors import UserError

_KINDS = {dict: "an object ({...})", list: "a list ([...])"}


def read_json(path: str, what: str, hint: str = "", expect: type | None = None):
    """The parsed JSON of `path`; a missing, unreadable or malformed file, or one whose top level is not of
    type `expect`, is a UserError naming `what`, the path and `hint`."""
    hint = f"; {hint}" if hint else ""
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist{hint}")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {path} is not valid JSON ({e.msg}, line {e.lineno}){hint}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text (a binary file?){hint}") from None
    except OSError as e:
        raise UserError(f"{what} {path} could not be read ({e.strerror}){hint}") from None
    if expect is not None and not isinstance(doc, expect):
        raise UserError(f"{what} {path} must hold {_KINDS.get(expect, expect.__name__)} at its top level, "
                        f"not {type(doc).__name__ if doc is not None else 'null'}{hint}")
    return doc


def read_json_if_present(path: str):
    """The parsed JSON of a file one of our stages wrote, or None where it does not exist (yet)."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def require_keys(doc: dict, keys, what: str, path: str, hint: str = "") -> None:
    missing = [k for k in keys if k not in doc]
    if missing:
        hint = f"; {hint}" if hint else ""
        raise UserError(f"{what} {path} lacks {', '.join(repr(k) for k in missing)}{hint}")


def write_json(path: str, doc) -> None:
    """Write `doc` as indented JSON, atomically (a reader never sees half a file)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)
