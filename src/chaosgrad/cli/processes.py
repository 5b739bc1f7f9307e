"""``--processes N``: one command run by N local processes that split its samples.

``chaosgrad grad ... --processes 2`` starts two copies of the same command (``python -m
chaosgrad`` with the same arguments, minus ``--processes``) with the coordinator on
localhost at a free port and ``CHAOSGRAD_COORDINATOR``, ``CHAOSGRAD_PROCESSES`` and
``CHAOSGRAD_PROCESS_ID`` set; each copy joins the others (``chaosgrad.parallel.initialize``)
and computes its share of the samples or orbits, and process 0 prints and writes the result.
Each process is held to its own share of the machine's cores (``CHAOSGRAD_CPUS``), so that
XLA's threads of one do not compete with the others'. The launcher exits with process 0's
exit code (or the first failure's).

On several hosts there is no launcher: run the same command on every host with those three
variables set by hand (or by the batch system): the coordinator's ``host:port`` (reachable
from every host), the number of processes and each host's id.

A command that takes ``--processes`` (the :data:`Processes` option) calls
:func:`run_as_processes` first and writes ``--out`` through :func:`writer`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from .. import parallel
from ..parallel import COORDINATOR, CPUS, PROCESS_ID, PROCESSES, cpu_shares
from .errors import user_errors
from .options import check_numbers
from .terminal import console

POLL_SECONDS = 0.1
GRACE_SECONDS = 10.0
"""After one process fails, how long the others may take to notice before they are stopped."""


def in_worker() -> bool:
    """True inside a process of a multi-process run (the variables are set)."""
    return bool(os.environ.get(PROCESSES))


def free_port() -> int:
    """A TCP port free on localhost now (the coordinator binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("localhost", 0))
        return int(probe.getsockname()[1])


def without_processes(argv: list[str]) -> list[str]:
    """``argv`` with ``--processes N`` / ``--processes=N`` removed."""
    kept, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument == "--processes":
            skip = True
        elif not argument.startswith("--processes="):
            kept.append(argument)
    return kept


def launch(processes: int, argv: list[str] | None = None) -> int:
    """Run the command in ``argv`` (default: this one's) as ``processes`` local processes;
    returns the exit code. Process 0's output is this command's; the others' stdout is
    dropped (they compute the same result) and their stderr kept."""
    argv = without_processes(sys.argv[1:] if argv is None else argv)
    coordinator = f"localhost:{free_port()}"
    shares = cpu_shares(processes)  # each process its own cores (None: fewer cores)
    workers = []
    for rank in range(processes):
        env = dict(
            os.environ,
            **{COORDINATOR: coordinator, PROCESSES: str(processes), PROCESS_ID: str(rank)},
        )
        if shares is not None:
            env[CPUS] = shares[rank]
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "chaosgrad", *argv],
                env=env,
                stdout=None if rank == 0 else subprocess.DEVNULL,
            )
        )
    return _wait(workers)


def _wait(workers: list[subprocess.Popen]) -> int:
    """Wait for every worker; when one fails, give the rest GRACE_SECONDS, then stop them
    (a collective would otherwise wait for the failed one forever)."""
    failed_at = None
    try:
        while any(worker.poll() is None for worker in workers):
            codes = [worker.returncode for worker in workers if worker.returncode is not None]
            if failed_at is None and any(codes):
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > GRACE_SECONDS:
                for worker in workers:
                    if worker.poll() is None:
                        worker.kill()
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        for worker in workers:
            worker.kill()
        raise
    codes = [int(worker.returncode) for worker in workers]
    return codes[0] or next((code for code in codes if code), 0)


Processes = Annotated[
    int,
    typer.Option(
        help="split the samples or orbits over N local processes (see chaosgrad.parallel; "
        "on several hosts set CHAOSGRAD_COORDINATOR, CHAOSGRAD_PROCESSES and "
        "CHAOSGRAD_PROCESS_ID instead)"
    ),
]


def run_as_processes(processes: int) -> None:
    """At the top of a command: with ``--processes N`` > 1 (outside a worker) run the
    command as N processes and exit with their exit code. Process 0 alone writes --out."""
    with user_errors():
        check_numbers({"processes": processes})
    if processes > 1 and not in_worker():
        raise typer.Exit(launch(processes))


def writer(out: Path | None) -> Path | None:
    """``--out`` for process 0; None for the others (they hold the same result)."""
    return out if parallel.is_main_process() else None


def join_processes() -> None:
    """A process of a multi-process run (``--processes N`` or the environment variables of
    ``chaosgrad.parallel``): join the others; all but process 0 compute silently.

    The collectives library prints to the C-level stdout; that goes to stderr (process 0)
    or nowhere (the others), so that ``--json`` still prints one JSON object.
    """
    main = os.environ.get(PROCESS_ID, "").strip() in ("", "0")  # before joining
    sys.stdout.flush()
    python_stdout = os.dup(sys.stdout.fileno())
    target = os.open(os.devnull, os.O_WRONLY) if not main else os.dup(sys.stderr.fileno())
    os.dup2(target, sys.stdout.fileno())
    os.close(target)
    if main:
        sys.stdout = os.fdopen(python_stdout, "w", buffering=1)
    else:
        os.close(python_stdout)
        console.quiet = True
    with user_errors():
        parallel.initialize()
