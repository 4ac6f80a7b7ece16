"""User mistakes become one line on stderr and a non-zero exit, never a traceback; so does Ctrl-C."""
import functools
import sys

INTERRUPTED = 130  # the shell's status for a process ended by SIGINT
_interrupt_note = None  # () -> the line printed on Ctrl-C (set by the run folder: where to resume from)
_at_end = []  # called when main() ends, however it ends (the run folder's lock is released)


class UserError(Exception):
    """A mistake the user can fix: the message names what is wrong and how to fix it."""


def on_interrupt(note) -> None:
    """Register the function that writes the Ctrl-C line (e.g. where the last checkpoint is)."""
    global _interrupt_note
    _interrupt_note = note


def at_end_of_main(fn) -> None:
    _at_end.append(fn)


def cli(main):
    """Wrap a script's main(): a UserError prints `error: <message>` and exits with status 2; Ctrl-C prints one
    line saying how to continue and exits with status 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        global _interrupt_note
        _interrupt_note = None
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {message_of(e)}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print(_interrupt_note() if _interrupt_note else "interrupted", file=sys.stderr)
            sys.exit(INTERRUPTED)
        finally:
            while _at_end:
                _at_end.pop()()

    return wrapper


def message_of(e: UserError) -> str:
    """The user-facing line; a DataLoader worker re-raises with the worker's traceback in the message."""
    msg = str(e).strip()
    if "Original Traceback" in msg:
        msg = msg.splitlines()[-1].split(": ", 1)[-1]
    return msg
