"""Reading a user's JSON file with one-line errors."""
import json
import os

from common.errors import UserError


def read_json(path: str, what: str, hint: str = ""):
    """The parsed JSON of `path`; a missing or malformed file is a UserError naming `what`, the path and `hint`."""
    hint = f"; {hint}" if hint else ""
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist{hint}")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {path} is not valid JSON ({e.msg}, line {e.lineno}){hint}") from None
