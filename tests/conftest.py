import contextlib
import hashlib
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import types

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# pytest started from a background job of a non-interactive shell inherits SIGINT ignored; the Ctrl-C tests
# need Python's handler, as an interactive start (or CI) has it
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def tree(path) -> dict:
    """{relative path: sha1} of every file under path (a folder's exact state)."""
    found = {}
    for folder, _, files in os.walk(path):
        for f in files:
            full = os.path.join(folder, f)
            found[os.path.relpath(full, path)] = hashlib.sha1(pathlib.Path(full).read_bytes()).hexdigest()
    return found


def free_port() -> int:
    """A TCP port no process listens on now, for torchrun's rendezvous."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(*args, check=True, env=None, timeout=600):
    """Run a repository script with this interpreter; returns the CompletedProcess."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=full_env,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed "
                             f"({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def script_args(module, stage: str, argv):
    """The args namespace `module`'s command line would give its main() for `argv` (config stage `stage`)."""
    from common.config import parse_args
    return parse_args(module.get_args_parser(), stage, [str(a) for a in argv])


def run_main(module, stage: str, *argv, check=True):
    """A script's main() in this process, as its command line runs it (one-line errors, exit codes), without
    starting an interpreter: a CompletedProcess-like (returncode, stdout, stderr) as run_script returns."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            module.main(script_args(module, stage, argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    proc = types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
    if check and code != 0:
        raise AssertionError(f"{module.__name__} {argv} failed ({code}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def call_main(module, stage: str, *argv):
    """A script's main() body in this process: a UserError is raised (for pytest.raises), not printed."""
    from common.config import resolve_args
    return module.main.__wrapped__(resolve_args(module.get_args_parser(), stage, [str(a) for a in argv]))


def assert_one_line_error(proc, *fragments):
    """Exit 2, a single 'error: ...' line on stderr naming each fragment, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for frag in fragments:
        assert frag in errors[0], (frag, errors[0])


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny embedded data set (10 classes, 32 px) with split.json, shared by the whole session."""
    from data import split
    from data.synthetic import prepare
    root = str(tmp_path_factory.mktemp("synth") / "data")
    run_main(prepare, "synthetic", "--output-dir", root, "--classes", "10", "--n-max", "40", "--n-test", "4",
             "--size", "32", "--imbalance", "10")
    run_main(split, "split", "--data-root", root, "--head-percent", "40")
    return root


@pytest.fixture
def classes_json(synth_root):
    with open(os.path.join(synth_root, "classes.json")) as f:
        return json.load(f)
