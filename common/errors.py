"""User mistakes become one line on stderr and a non-zero exit, never a traceback; so do Ctrl-C and running
out of GPU memory."""
import contextlib
import functools
import signal
import sys
import threading
import traceback

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


@contextlib.contextmanager
def deferred_interrupt():
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block has finished, then raise it: a
    file written in the block (a checkpoint, an image) is never cut in half by it. Only the main thread
    receives signals; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def batch_loop(kind: str):
    """Decorate a loop over batches of kind 'training', 'evaluation' or 'generation': running out of GPU
    memory in it names the kind, and for 'evaluation' --eval-batch-size (where the script has one) instead of
    --batch-size; the batch size named is its loader argument's, when it has one."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                if is_out_of_memory(e) and not hasattr(e, "loop"):
                    loader = next((a for a in args if hasattr(a, "batch_size") and hasattr(a, "dataset")),
                                  None)
                    e.loop = (kind, getattr(loader, "batch_size", None))
                raise

        return wrapper

    return decorate


def is_out_of_memory(e: BaseException) -> bool:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e) and "CUDA" in str(e)


def out_of_memory_line(e: BaseException, args) -> str:
    """The one line for a CUDA out-of-memory error in the script's main(args): the stage, the batch size and
    the flag that lowers it, and how to go on."""
    loop, batch = getattr(e, "loop", (None, None))
    has = {f: hasattr(args, f[2:].replace("-", "_")) for f in ("--batch-size", "--eval-batch-size")}
    evaluation = (loop == "evaluation" and has["--eval-batch-size"]) or not has["--batch-size"]
    flag = "--eval-batch-size" if evaluation else "--batch-size"
    batch = batch or getattr(args, flag[2:].replace("-", "_"), None)
    smaller = f"{flag} {max(1, batch // 2)}" if isinstance(batch, int) else f"a lower {flag}"
    where = getattr(args, "stage", None) or "this stage"
    facts = [x for x in (loop, f"{flag} {batch}" if isinstance(batch, int) else None) if x]
    where += f" ({', '.join(facts)})" if facts else ""
    how = _next_step_after_memory(flag) if _next_step_after_memory else "run the same command with {smaller}"
    return f"out of GPU memory in {where}; {how.format(smaller=smaller)}"


_next_step_after_memory = None  # (flag) -> what to do after running out of memory, with '{smaller}' in it


def on_out_of_memory(note) -> None:
    """Register the function that says how to go on after running out of GPU memory (e.g. training: the
    checkpoint is intact; start again with the smaller batch)."""
    global _next_step_after_memory
    _next_step_after_memory = note


def cli(main):
    """Wrap a script's main(): a UserError prints `error: <message>` and exits with status 2, and so does
    running out of GPU memory (naming the batch-size flag to lower); Ctrl-C prints one line saying how to
    continue and exits with status 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        global _interrupt_note, _next_step_after_memory
        _interrupt_note = _next_step_after_memory = None
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {message_of(e)}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt as e:
            _finish_progress_bars(e)
            print(_interrupt_note() if _interrupt_note else "interrupted", file=sys.stderr)
            sys.exit(INTERRUPTED)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            _finish_progress_bars(e)
            print(f"error: {out_of_memory_line(e, args[0] if args else None)}", file=sys.stderr)
            sys.exit(2)
        finally:
            while _at_end:
                _at_end.pop()()

    return wrapper


def _finish_progress_bars(e: BaseException) -> None:
    """Let the loops that the exception left close now (their progress bars print their last state), so that
    the line printed next is the last one on the terminal."""
    traceback.clear_frames(e.__traceback__)
    sys.stderr.flush()


def message_of(e: UserError) -> str:
    """The user-facing line; a DataLoader worker re-raises with the worker's traceback in the message."""
    msg = str(e).strip()
    if "Original Traceback" in msg:
        msg = msg.splitlines()[-1].split(": ", 1)[-1]
    return msg
