"""The one checkpoint format and its fingerprint rules, as fit uses them (the runs' own
resume tests: tests/lyapunov/test_spectrum_resume.py, tests/estimators/test_*_resume.py)."""

import hashlib
import json
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import chaosgrad as cg
from chaosgrad import _checkpoint, _fingerprint, _runstate
from chaosgrad.estimators import Backprop
from chaosgrad.statistics import TimeAverage

KEY = jax.random.key(0)


def ar1(g=0.0):
    return cg.Map(lambda t, x, p: 0.5 * x + p, args=jnp.asarray(g), dim=1)


def quick(**changes):
    settings = dict(
        loss=lambda s: (s - 3.0) ** 2,
        statistic=TimeAverage(lambda x: x[0]),
        estimator=Backprop(steps=20, burn_in=5),
        optimizer=optax.sgd(0.05),
        wrt=lambda s: s.args,
        key=KEY,
    )
    return {**settings, **changes}


def test_a_file_holds_its_kind_fingerprint_meta_and_parts(tmp_path):
    arrays = {"x": np.arange(6.0).reshape(2, 3), "done": np.asarray(4)}
    data, layout = _checkpoint.pack_arrays(arrays)
    path = tmp_path / "sub" / "run.ckpt"
    _checkpoint.write_file(path, "kind", {"key": "k"}, {"arrays": layout}, {"state": data})
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.ckpt"]  # no temporary left
    raw = path.read_bytes()
    assert raw[:16] == b"chaosgrad-ckpt\n\x02"
    assert hashlib.sha256(raw[:-32]).digest() == raw[-32:]
    (length,) = struct.unpack_from("<Q", raw, 16)
    assert json.loads(raw[24 : 24 + length])["parts"] == [["state", len(data)]]
    contents = _checkpoint.read_file(path)
    assert (contents.kind, contents.fingerprint, contents.version) == ("kind", {"key": "k"}, 2)
    back = _checkpoint.unpack_arrays(contents.parts["state"], contents.meta["arrays"])
    for name, value in arrays.items():
        np.testing.assert_array_equal(back[name], value)
        assert back[name].dtype == value.dtype


@pytest.mark.parametrize(
    "change, setting",
    [
        (dict(loss=lambda s: (s - 3.5) ** 2), "loss"),
        (dict(statistic=TimeAverage(lambda x: x[0] ** 2)), "observable"),
        (dict(x0=jnp.ones(1)), "x0"),
    ],
)
def test_fit_refuses_a_changed_function_or_start(tmp_path, change, setting):
    """The observable and the loss are compared by what they compute (two lambdas of one
    name with other bodies differ); a fresh lambda of the same code resumes."""
    cg.fit(ar1(), iterations=2, checkpoint=tmp_path, **quick())
    with pytest.raises(ValueError, match=f"different {setting} .* now\\); resume|pass") as info:
        cg.fit(ar1(), iterations=4, resume=tmp_path, **quick(**change))
    assert "\n" not in str(info.value)
    assert cg.fit(ar1(), iterations=4, resume=tmp_path, **quick()).status == "ok"


def test_fit_refuses_a_changed_value_a_function_reads(tmp_path):
    """A closed-over array changed in place is what the observable reads: refused."""
    weights = np.array([1.0])
    statistic = TimeAverage(lambda x: x[0] * weights[0])
    cg.fit(ar1(), iterations=2, checkpoint=tmp_path, **quick(statistic=statistic))
    weights[0] = 2.0
    with pytest.raises(ValueError, match="different observable "):
        cg.fit(ar1(), iterations=4, resume=tmp_path, **quick(statistic=statistic))


def test_fit_compares_the_parameters_it_does_not_train(tmp_path):
    """The trained parameters come from the checkpoint (another start resumes); the others
    decide the result and are compared."""

    def scaled(g, scale):
        return cg.Map(lambda t, x, p: 0.5 * x + p[0] * p[1], args=(g, scale), dim=1)

    settings = quick(wrt=lambda s: s.args[0])
    start = (jnp.asarray(0.0), jnp.asarray(1.0))
    cg.fit(scaled(*start), iterations=2, checkpoint=tmp_path, **settings)
    moved = scaled(jnp.asarray(0.7), start[1])
    assert cg.fit(moved, iterations=3, resume=tmp_path, **settings).status == "ok"
    with pytest.raises(
        ValueError, match=r"different parameter \(\.args\[1\]=1.0 there, \.args\[1\]=2.0 now\)"
    ):
        cg.fit(scaled(start[0], jnp.asarray(2.0)), iterations=3, resume=tmp_path, **settings)


def _version_1(directory):
    """Rewrite fit's file in format version 1 (before the system, parameters, observable,
    loss and x0 were recorded)."""
    stored = _checkpoint.read(directory)
    assert stored.fingerprint is not None and stored.opt_state is not None
    fingerprint = {
        name: text
        for name, text in stored.fingerprint.items()
        if name not in ("system", "parameter", "observable", "loss", "x0")
    }
    header = json.dumps(
        {
            "iteration": stored.iteration,
            "status": stored.status,
            "history": stored.history,
            "fingerprint": fingerprint,
            "version": 1,
            "payloads": [len(stored.values), len(stored.opt_state)],
        }
    ).encode()
    body = b"".join(
        [b"chaosgrad-ckpt\n\x01", struct.pack("<Q", len(header)), header, stored.values]
        + [stored.opt_state]
    )
    (directory / "checkpoint.eqx").write_bytes(body + hashlib.sha256(body).digest())


def test_fit_reads_format_version_1_comparing_what_it_recorded(tmp_path):
    straight = cg.fit(ar1(), iterations=5, **quick())
    cg.fit(ar1(), iterations=3, checkpoint=tmp_path, **quick())
    _version_1(tmp_path)
    assert _checkpoint.read(tmp_path).older
    with pytest.raises(ValueError, match="different key "):
        cg.fit(ar1(), iterations=5, resume=tmp_path, **quick(key=jax.random.key(1)))
    resumed = cg.fit(ar1(), iterations=5, resume=tmp_path, checkpoint=tmp_path, **quick())
    assert resumed.history["loss"] == straight.history["loss"]
    assert not _checkpoint.read(tmp_path).older  # written again in the current format


def test_a_file_of_another_kind_or_a_newer_format_is_refused(tmp_path):
    cg.fit(ar1(), iterations=2, checkpoint=tmp_path, **quick())
    (tmp_path / "checkpoint.eqx").rename(tmp_path / _runstate.FILENAME)
    run = _runstate.RunCheckpoint(tmp_path, {"run": "lyapunov_spectrum"})
    with pytest.raises(ValueError, match="different run \\(fit there, lyapunov_spectrum now\\)"):
        run.load()
    path = tmp_path / _runstate.FILENAME
    data = bytearray(path.read_bytes())
    data[15] = 9
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="format version 9, newer than this chaosgrad"):
        run.load()


def test_a_refusal_shows_the_item_that_differs():
    there = ", ".join(f".w{i}=1.0" for i in range(40))
    now = there.replace(".w33=1.0", ".w33=2.0")
    message = str(_fingerprint.refusal("DIR", "parameter", there, now, "fix it"))
    assert message == (
        "cannot resume from checkpoint DIR: it was written with a different parameter "
        "(.w33=1.0 there, .w33=2.0 now); fix it"
    )
