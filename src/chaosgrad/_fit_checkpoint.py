"""fit's checkpoint: what it saves after its iterations, and what a resume checks.

The file is the one checkpoint format (:mod:`chaosgrad._checkpoint`): the parameters, the
optimizer state, the history, the iteration, the status and the fingerprint of the settings
(:mod:`chaosgrad._fingerprint`). A resume refuses, naming the setting and the fix, a
different key, system, parameters not trained, statistic, observable, loss, ``wrt``,
``x0`` or estimator, and an optimizer whose state's structure or whose updates of a probe
gradient differ (a changed learning rate, clipping threshold or momentum). A failed run
resumes only with a changed optimizer or estimator, from its last good parameters, with
the history before the iteration it redoes.
"""

from __future__ import annotations

from pathlib import Path

from . import _checkpoint

HISTORY_KEYS = (
    "loss",
    "statistic",
    "grad_norm",
    "stderr_norm",
    "regularizer",
    "seconds",
    "parameters",
)
"""What ``FitResult.history`` records at every iteration."""


def save(
    path: Path,
    values,
    opt_state,
    history: dict,
    iteration: int,
    status: str,
    fingerprint: dict,
    optimizer,
) -> None:
    """One atomic checkpoint file; ``iteration``: the good iterations done (where to go on)."""
    # what a resume compares to see a changed learning rate, clipping or momentum
    fingerprint = dict(fingerprint, optimizer_probe=_checkpoint.optimizer_probe(optimizer, values))
    _checkpoint.write(
        path,
        values,
        opt_state,
        iteration=iteration,
        status=status,
        history=history,
        fingerprint=fingerprint,
    )


def _deserialise(path: Path, data: bytes, like, what: str):
    try:
        return _checkpoint.deserialise(data, like)
    except Exception as exc:  # noqa: BLE001 - Equinox/NumPy raise several kinds
        raise ValueError(
            f"checkpoint {path} does not fit this run's {what}: {type(exc).__name__}: {exc}"
        ) from None


def load(path: Path, values_like, opt_state_like, fingerprint: dict, optimizer):
    """(values, optimizer state, history, start iteration) to resume from (module doc)."""
    stored = _checkpoint.read(path)
    history, status = stored.history, stored.status
    if stored.fingerprint is None:  # the older two-file format: nothing to compare
        if status != "ok":
            raise ValueError(
                f"checkpoint {path} (the older two-file format) ended with {status!r} and may "
                "hold the parameters after the failure: start a new run"
            )
        values, opt_state = _deserialise(
            path, stored.values, (values_like, opt_state_like), "parameters or optimizer state"
        )
        return values, opt_state, history, stored.iteration
    old = stored.fingerprint
    fixes = {
        "key": "pass the key of the run being continued",
        "wrt": "select the same parameters as the run being continued",
        "statistic": "resume with the same statistic",
        "observable": "resume with the same observable (its code and the values it reads)",
        "loss": "resume with the same loss (its code and the values it reads)",
        "system": "resume with the same system",
        "parameter": "resume with the same values of the parameters not trained",
        "x0": "pass the x0 of the run being continued",
        "estimator": "resume with the same estimator settings",
    }
    setting = _checkpoint.first_difference(old, fingerprint, list(fixes)[:-1], stored.older)
    if setting is not None:
        raise _checkpoint.refusal(path, setting, old[setting], fingerprint[setting], fixes[setting])
    estimator_changed = old["estimator"] != fingerprint["estimator"]
    structure_changed = old["optimizer"] != fingerprint["optimizer"]
    if status == "ok":
        if estimator_changed:
            raise _checkpoint.refusal(
                path, "estimator", old["estimator"], fingerprint["estimator"], fixes["estimator"]
            )
        if structure_changed:
            raise _checkpoint.refusal(
                path,
                "optimizer",
                "state " + old["optimizer_outline"],
                "state " + fingerprint["optimizer_outline"],
                "resume with the same optimizer (its state's structure must match)",
            )
    values = _deserialise(path, stored.values, values_like, "parameters")
    probe = _checkpoint.optimizer_probe(optimizer, values)
    if (
        status == "ok"
        and "optimizer_probe" in old
        and not _checkpoint.same_probe(old["optimizer_probe"], probe)
    ):
        raise ValueError(
            f"cannot resume from checkpoint {path}: it was written with a different "
            "optimizer (its updates of a probe gradient differ: a changed learning rate, "
            "clipping threshold or momentum); resume with the same optimizer settings"
        )
    if status != "ok":
        probe_changed = structure_changed or not _checkpoint.same_probe(
            old.get("optimizer_probe"), probe
        )
        if not (estimator_changed or probe_changed):
            raise ValueError(
                f"checkpoint {path} ended with {status!r}; resuming with the same settings "
                "would repeat it: change the optimizer or estimator (e.g. a smaller learning "
                "rate)"
            )
        history = {name: list(history[name][: stored.iteration]) for name in HISTORY_KEYS}
    if structure_changed:  # a failed run resumed with another kind of optimizer
        opt_state = optimizer.init(values)
    else:
        opt_state = _deserialise(path, stored.opt_state or b"", opt_state_like, "optimizer state")
    return values, opt_state, history, stored.iteration
