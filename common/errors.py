"""User mistakes become one line on stderr and a non-zero exit, never a traceback."""
import functools
import sys


class UserError(Exception):
    """A mistake the user can fix: the message names what is wrong and how to fix it."""


def cli(main):
    """Wrap a script's main(): a UserError prints `error: <message>` and exits with status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {message_of(e)}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def message_of(e: UserError) -> str:
    """The user-facing line; a DataLoader worker re-raises with the worker's traceback in the message."""
    msg = str(e).strip()
    if "Original Traceback" in msg:
        msg = msg.splitlines()[-1].split(": ", 1)[-1]
    return msg
