"""Chains of subprocess runs, --jobs chains at a time, resumably, with a progress bar in estimated seconds.

A run counts as finished when its marker file exists: finished runs are never redone, so the same command
resumes after an interruption. A chain's runs go one after another on the worker that took the chain; a run
whose `needs` (markers of other chains' runs) are missing waits, holding its worker. A failed run gives up the
rest of its chain, and a run that needs a given-up marker is skipped; both are listed in Runner.failed.
"""
import os
import shlex
import shutil
import subprocess
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLL_S = 5  # how often a run that waits for a file no run of the benchmark is making looks again


@dataclass
class Job:
    label: str
    cmd: list  # or a function returning it, called when the run starts (after the runs it needs)
    folder: str
    marker: str  # the file that says the run finished
    cost: float
    resumable: bool = True  # a run-folder script (--resume / --overwrite)
    extra: dict = field(default_factory=dict)
    needs: tuple = ()  # markers of other chains' runs that must exist first
    fresh: bool = False  # a script that refuses an existing output folder: a partial one is removed first

    @property
    def done(self) -> bool:
        return os.path.isfile(self.marker)


@dataclass
class Held:
    """A chain that holds a worker: the position of its next run, and that run while it runs."""
    chain: list
    pos: int = 0
    future: Future | None = None


class Runner:
    def __init__(self, chains: list, jobs: int, threads: int):
        self.chains, self.jobs = chains, max(1, jobs)
        self.env = {**os.environ,
                    "OMP_NUM_THREADS": str(threads or max(1, (os.cpu_count() or 2) // self.jobs)),
                    "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.failed = []
        self.given_up = set()  # markers of runs that failed or were skipped: runs that need them cannot start
        self.waiting, self.held = list(chains), []
        total = sum(j.cost for c in chains for j in c)
        # counted from the start: the ETA is the rest's
        done = sum(j.cost for c in chains for j in c if j.done)
        self.bar = tqdm(total=total, initial=done, unit="s", desc="benchmark (estimated CPU seconds)",
                        dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} "
                                                       "[{elapsed}<{remaining}]")

    def ready(self, chain: list) -> bool:
        """Whether the first unfinished run of `chain` can start now (or be skipped: a need was given up)."""
        job = next((j for j in chain if not j.done), None)
        return job is None or all(os.path.isfile(m) or m in self.given_up for m in job.needs)

    def next_chain(self) -> list | None:
        """Takes the first waiting chain that can start, else (when no chain holds a worker, so nothing runs
        that could unblock one) the first; None when none is taken."""
        chain = next((c for c in self.waiting if self.ready(c)), None)
        if chain is None and not self.held and self.waiting:
            chain = self.waiting[0]
        if chain is not None:
            self.waiting.remove(chain)
        return chain

    def execute(self, job: Job) -> tuple | None:
        """Runs `job`, whose needs exist (on a worker thread): None when it made its marker, else (what
        failed, the line to print)."""
        if job.fresh and os.path.isdir(job.folder):
            # a partial output of an interrupted run; the benchmark owns this folder
            shutil.rmtree(job.folder)
        try:
            cmd = [str(c) for c in (job.cmd() if callable(job.cmd) else job.cmd)]
        # e.g. a tuning result that cannot be read: this run fails, the others go on
        except Exception as e:  # noqa: BLE001
            return f"its command could not be made: {e}", f"failed: {job.label} ({e})"
        if job.resumable:
            cmd.append("--resume" if os.path.isfile(os.path.join(job.folder, "ckpt_last.pt"))
                       else "--overwrite")
        os.makedirs(os.path.dirname(os.path.abspath(job.folder)), exist_ok=True)
        log = job.folder.rstrip("/") + ".log"
        with open(log, "w") as f:
            f.write(" ".join(shlex.quote(str(c)) for c in cmd) + "\n")
            f.flush()
            rc = subprocess.run(cmd, cwd=REPO, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                check=False).returncode
        if rc != 0 or not job.done:
            return log, f"failed: {job.label} (exit {rc}; log {log})"
        return None

    def ended(self, held: Held, failure: tuple | None) -> None:
        """Books the end of `held`'s current run; on a failure, gives up the rest of its chain."""
        job = held.chain[held.pos]
        self.bar.update(job.cost)
        self.bar.set_postfix_str(job.label)
        if failure is None:
            held.pos += 1
            return
        what, line = failure
        self.failed.append((job.label, what))
        tqdm.write(line)
        self.bar.update(sum(j.cost for j in held.chain[held.pos + 1:]))
        self.given_up.update(j.marker for j in held.chain[held.pos:])
        held.pos = len(held.chain)

    def advance(self, held: Held, pool: ThreadPoolExecutor) -> None:
        """Passes `held`'s finished runs, then starts its next run, skips it (a need was given up) or leaves
        it waiting for its needs; a chain with no run left lets its worker go."""
        while held.pos < len(held.chain):
            job = held.chain[held.pos]
            if job.done:
                self.bar.update(0)
                self.bar.set_postfix_str(job.label)
                held.pos += 1
                continue
            missing = [m for m in job.needs if not os.path.isfile(m)]
            lost = [m for m in missing if m in self.given_up]
            if lost:
                self.ended(held, (f"not run: {lost[0]} was not made",
                                  f"skipped: {job.label} (needs {lost[0]}, whose run failed)"))
            elif missing:
                return
            else:
                held.future = pool.submit(self.execute, job)
                return
        self.held.remove(held)

    def settle(self, pool: ThreadPoolExecutor) -> None:
        """Moves every held chain that is not running as far as it goes, and lets free workers take waiting
        chains, until neither changes anything."""
        while True:
            for held in [h for h in self.held if h.future is None]:
                self.advance(held, pool)
            taken = False
            while len(self.held) < self.jobs and (chain := self.next_chain()) is not None:
                self.held.append(Held(chain))
                taken = True
            if not taken:
                return

    def run(self) -> None:
        """Runs `--jobs` chains at a time. A free worker takes the first chain (in the given order) whose next
        run can start, so runs that waited for another chain's output go before the chains listed after
        them."""
        done = [j for c in self.chains for j in c if j.done]
        if done:
            tqdm.write(f"{len(done)} finished runs found; not redone")
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            while True:
                self.settle(pool)
                if not self.held:
                    break
                running = {h.future: h for h in self.held if h.future is not None}
                if not running:  # every held chain waits for a file that no run of the benchmark is making
                    time.sleep(POLL_S)
                    continue
                finished, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for future in finished:
                    held = running[future]
                    held.future = None
                    try:
                        failure = future.result()
                    # not the run's own failure (e.g. its log cannot be written)
                    except Exception as e:  # noqa: BLE001
                        failure = f"error: {e}", f"failed: {held.chain[held.pos].label} ({e})"
                    self.ended(held, failure)
        self.bar.close()
