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
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
