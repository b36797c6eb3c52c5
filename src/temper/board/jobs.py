"""Jobs: `temper VERB ...` subprocesses started by the board, and what they leave on disk.

Every job is the CLI itself (`python -m temper VERB ARGV`), so the board runs exactly the command it shows.
A job's record (`<runs>/.board/jobs/<id>.json`) and output (`<runs>/.board/logs/<run>.<kind>.log`, appended
across launch and resume) live beside the runs, not in memory: a page reload or a board restart finds them.
Jobs start in their own session, so a board restart does not kill a training; the new board still sees the
process through its pid and can stop it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from temper.errors import TemperError
from temper.runs import write_json_atomic


@dataclass
class Job:
    id: str
    kind: str  # train | eval | export
    run: str  # the run (folder name under the runs root) the job concerns
    argv: list[str]  # after `temper`
    log: str
    pid: int | None = None
    started: float = field(default_factory=time.time)
    ended: float | None = None
    returncode: int | None = None
    stop_requested: bool = False

    @property
    def command(self) -> str:
        return shlex.join(["temper", *self.argv])

    def alive(self) -> bool:
        if self.pid is None or self.ended is not None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # A zombie still answers signal 0. Ours stays one until `_wait` has recorded its exit code (it waits
        # with WNOWAIT), so a zombie without a code is still "running", never "lost".
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{self.pid}/stat").read_text()
            return stat.rsplit(")", 1)[1].split()[0] != "Z" or self.returncode is None
        return True

    def state(self) -> str:
        if self.alive():
            return "stopping" if self.stop_requested else "running"
        if self.returncode == 0:
            return "done"
        if self.stop_requested:
            return "stopped"
        return "failed" if self.returncode is not None else "lost"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "command": self.command, "state": self.state()}


class Jobs:
    """Starts, stops and remembers jobs under `<runs_root>/.board/`."""

    def __init__(self, runs_root: Path) -> None:
        self.root = runs_root
        self.dir = runs_root / ".board"
        (self.dir / "jobs").mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for path in sorted((self.dir / "jobs").glob("*.json")):
            with contextlib.suppress(OSError, ValueError, TypeError):
                job = Job(**json.loads(path.read_text()))
                self.jobs[job.id] = job

    # ---- queries -------------------------------------------------------------------------------------
    def for_run(self, run: str, kind: str | None = None) -> list[Job]:
        return sorted(
            (j for j in self.jobs.values() if j.run == run and (kind is None or j.kind == kind)),
            key=lambda j: j.started,
        )

    def latest(self, run: str, kind: str = "train") -> Job | None:
        jobs = self.for_run(run, kind)
        return jobs[-1] if jobs else None

    def running_training(self) -> Job | None:
        return next((j for j in self.jobs.values() if j.kind == "train" and j.alive()), None)

    # ---- start / stop --------------------------------------------------------------------------------
    def start(self, kind: str, run: str, argv: list[str], cwd: Path | None = None) -> Job:
        """Start `python -m temper ARGV`; its output goes to the run's log for this kind of job."""
        with self.lock:
            if kind == "train":
                busy = self.running_training()
                if busy is not None:
                    raise TemperError(
                        f"run {busy.run!r} is still training; on this machine one training at a time.",
                        hint="Stop it (its checkpoint is kept and it can be resumed) or wait until it ends.",
                    )
            stamp = time.strftime("%Y%m%d-%H%M%S")
            job_id = f"{run}.{kind}.{stamp}.{len(self.jobs)}"
            name = f"{run}.{kind}.log" if kind == "train" else f"{run}.{kind}-{stamp}.log"
            log = self.dir / "logs" / name
            job = Job(job_id, kind, run, list(argv), str(log))
            with log.open("ab") as out:
                out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')}  $ {job.command}\n".encode())
                out.flush()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "temper", *argv],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=cwd,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    start_new_session=True,  # survives a board restart; signals reach it alone
                )
            job.pid = proc.pid
            self.jobs[job.id] = job
            self.procs[job.id] = proc
            self._save(job)
        threading.Thread(target=self._wait, args=(job, proc), daemon=True).start()
        return job

    def _wait(self, job: Job, proc: subprocess.Popen[bytes]) -> None:
        # Record the exit code before reaping: a reaped child with no code yet would read as "lost".
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        assert info is not None  # waitid returns None only with WNOHANG
        code = -info.si_status if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED) else info.si_status
        with self.lock:
            job.returncode, job.ended = code, time.time()
            self.procs.pop(job.id, None)
            self._save(job)
        proc.wait()

    def stop(self, job: Job, force: bool = False) -> None:
        """SIGTERM: the trainer saves a checkpoint after the current step and exits; force: kill at once."""
        if not job.alive() or job.pid is None:
            return
        job.stop_requested = True
        self._save(job)
        with contextlib.suppress(ProcessLookupError):
            if force:
                os.killpg(job.pid, signal.SIGKILL)
            else:
                os.kill(job.pid, signal.SIGTERM)

    def refresh(self, job: Job) -> None:
        """A job from an earlier board: once its process is gone, record that (its exit code is unknown)."""
        if job.ended is None and job.id not in self.procs and not job.alive():
            job.ended = time.time()
            self._save(job)

    def _save(self, job: Job) -> None:
        write_json_atomic(self.dir / "jobs" / f"{job.id}.json", asdict(job))

    def close(self, stop_running: bool = False) -> None:
        if stop_running:
            for job in list(self.jobs.values()):
                self.stop(job)
