"""Resumable runs: the loop "load what a killed run saved, run the next piece, save", once.

``lyapunov_spectrum(..., checkpoint=DIR)``, ``Shadowing(..., checkpoint=DIR)`` and
``FastAdjointResponse(..., checkpoint=DIR)`` (and ``chaosgrad lyapunov|grad ...
--checkpoint DIR``) run in pieces, each one compiled program, and save the whole state of
the run after every piece: a dict of arrays (the step reached, the orbit states, the
tangent bases, the sums so far) in ``DIR/run.ckpt``, a file of the one checkpoint format
(:mod:`chaosgrad._checkpoint`; its kind is the run's name, its fingerprint the settings
that decide the result, :mod:`chaosgrad._fingerprint`). A run killed at any moment
(SIGKILL included) and started again with the same settings continues after the last
saved piece and returns exactly what an uninterrupted run returns, because each piece is
a deterministic function of the saved state. A file made with other settings is refused,
naming the first differing setting; a corrupt one is refused too.

The driver (:func:`resume`, then :func:`advance` for each stage):

    state = resume(checkpoint, initial)        # the saved state, or initial()
    state = advance(checkpoint, state, "forward", pieces, run_piece)
    state = advance(checkpoint, state, "backward", later_pieces, run_other_piece)

A stage's pieces are a list known once the state before it is (a spectrum's blocks depend
on the steps between renormalisations its burn-in chose); the state counts the pieces done
of each stage (``"<stage> done"``), so a resumed run skips them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np

from ._checkpoint import CorruptCheckpoint, pack_arrays, read_file, unpack_arrays, write_file
from ._fingerprint import first_difference, refusal

FILENAME = "run.ckpt"
FIX = "use another directory or delete it"
State = dict[str, Any]
Piece = TypeVar("Piece")


def check_checkpoint(directory) -> None:
    """A checkpoint setting is None or a directory path (str or os.PathLike)."""
    if directory is not None and not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a directory path or None, got {directory!r}")
    if isinstance(directory, str) and not directory.strip():
        raise ValueError("checkpoint must be a directory path, got an empty string")


class RunCheckpoint:
    """``DIR/run.ckpt`` of one run: :meth:`load` what a killed run saved, :meth:`save`
    progress. ``fingerprint``: the run's settings, described (``run`` names the run).

    Only process 0 writes when several processes run one computation (they hold the same
    replicated state); every process reads.
    """

    def __init__(self, directory: str | os.PathLike, fingerprint: dict[str, str]):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"checkpoint {self.directory} exists and is not a directory")

    @property
    def path(self) -> Path:
        return self.directory / FILENAME

    def load(self) -> State | None:
        """The saved arrays, or None when there is no checkpoint yet.

        Raises ValueError when the file is corrupt, of an older format, or was made with
        other settings.
        """
        if not self.path.exists():
            return None
        contents = read_file(self.path)
        saved = dict(contents.fingerprint, run=contents.kind)
        differing = first_difference(saved, self.fingerprint)
        if differing is not None:
            there, now = saved.get(differing, "nothing"), self.fingerprint.get(differing, "nothing")
            raise refusal(self.directory, differing, there, now, FIX)
        try:
            return unpack_arrays(contents.parts["state"], contents.meta["arrays"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a sound file of no run
            raise CorruptCheckpoint(
                f"checkpoint {self.directory} is corrupt: {FILENAME} holds no run state ({exc})"
            ) from None

    def save(self, arrays: State) -> None:
        """Replace the checkpoint by ``arrays`` atomically (process 0 only)."""
        if jax.process_index() != 0:
            return
        data, layout = pack_arrays(arrays)
        fingerprint = {name: text for name, text in self.fingerprint.items() if name != "run"}
        write_file(
            self.path, self.fingerprint["run"], fingerprint, {"arrays": layout}, {"state": data}
        )


def resume(checkpoint: RunCheckpoint | None, initial: Callable[[], State]) -> State:
    """What a killed run saved in ``checkpoint``, else ``initial()`` (nothing saved yet, or
    no checkpoint)."""
    saved = None if checkpoint is None else checkpoint.load()
    return initial() if saved is None else saved


def advance(
    checkpoint: RunCheckpoint | None,
    state: State,
    stage: str,
    pieces: Sequence[Piece],
    run_piece: Callable[[State, Piece], State],
    report: Callable[[Piece], None] | None = None,
) -> State:
    """The pieces of ``stage`` that ``state`` has not done, in order: each
    ``state = run_piece(state, piece)`` (one compiled program), then the state saved and
    ``report(piece)`` called (a progress bar). Returns the state after the last piece."""
    done_key = f"{stage} done"
    for index, piece in enumerate(pieces):
        if index < int(state.get(done_key, 0)):
            continue
        state = dict(run_piece(state, piece), **{done_key: np.asarray(index + 1)})
        if checkpoint is not None:
            checkpoint.save(state)
        if report is not None:
            report(piece)
    return state
