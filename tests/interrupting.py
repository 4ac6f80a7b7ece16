"""Run a repository script with Ctrl-C delivered at a chosen moment instead of after a chosen time.

    python tests/interrupting.py MODULE:ATTRIBUTE@N SCRIPT [ARGS...]

wraps MODULE.ATTRIBUTE (a function, or a method as Class.method) so that its N-th call first sends SIGINT to
this process, then runs as usual; then runs SCRIPT as `python SCRIPT ARGS...` would. Python raises
KeyboardInterrupt at the next bytecode of the main thread, so the signal lands at the start of that call,
every time. `@N+` sends it after the N-th call has returned instead (in the caller, right after the call).
wrap_if_named() does the same inside the Python processes that a shell script starts.
"""
import functools
import importlib
import os
import runpy
import signal
import sys


def wrap(spec: str) -> None:
    target, count = spec.rsplit("@", 1)
    after = count.endswith("+")
    n = int(count.rstrip("+"))
    module_name, attr = target.split(":")
    owner = importlib.import_module(module_name)
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = [0]

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n and not after:
            os.kill(os.getpid(), signal.SIGINT)
        result = original(*args, **kwargs)
        if calls[0] == n and after:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    setattr(owner, name, wrapper)
    # a process started from a background job of a non-interactive shell inherits SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler: install it, as an interactive start has it
    signal.signal(signal.SIGINT, signal.default_int_handler)


def wrap_if_named(argv: list) -> None:
    """For a sitecustomize.py that every Python process of a shell script runs: with INTERRUPT_AT="SCRIPT WORD
    MODULE:ATTRIBUTE@N" in the environment, wrap as above in the process of SCRIPT (a path ending) whose
    command line holds WORD (e.g. the `tail` of `--part tail`; '-' for any)."""
    spec = os.environ.get("INTERRUPT_AT")
    if not spec or not argv:
        return
    script, word, target = spec.split()
    if argv[0].endswith(script) and (word == "-" or word in argv[1:]):
        wrap(target)


if __name__ == "__main__":
    script = sys.argv[2]
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python SCRIPT` has it
    sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
    wrap(sys.argv[1])
    sys.argv = sys.argv[2:]
    runpy.run_path(script, run_name="__main__")
