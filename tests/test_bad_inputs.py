"""Bad inputs, as a hostile but fair new user would give them: every one is refused in ONE
clear line naming the argument (design.md, Errors), never a traceback, a NaN passed off as
a result, or a silent default.

One table for the command line (exit code 2, one line of output, the option named) and
one for the Python API (a chaosgrad error type, a one-line message naming the argument);
then hypothesis fuzzing of the observable language and of the numeric option parsers.
"""

from __future__ import annotations

import json
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import chaosgrad as cg
from chaosgrad import (
    Backprop,
    FiniteDifference,
    Kernel,
    PathKernel,
    Shadowing,
    Terminal,
    TimeAverage,
    TruncatedBackprop,
    linear_response,
    lyapunov_spectrum,
    simulate,
)
from chaosgrad.cli import app
from chaosgrad.cli.expressions import ExpressionError, parse_observable
from chaosgrad.cli.options import check_numbers
from chaosgrad.cli.registry import build_system, parse_assignments, settable_parameters

runner = CliRunner()
KEY = jax.random.key(0)
CHEAP = ["--steps", "100", "--burn-in", "10", "--samples", "2"]
"""A time-average's orbit settings small enough for a table row."""


def grad(*extra, method="backprop", system="lorenz63", wrt="rho"):
    return ["grad", system, "--wrt", wrt, "--method", method, *extra]


# (kind, arguments, what the one line must contain). "{file}" is an existing file,
# "{npy}" a valid trajectory for `learn`; "{complex}" and "{huge}" (values near 1e200) not.
CLI_ROWS = [
    # numeric options: never a silent default, never truncated, never NaN
    ("count", grad("--samples", "0", "--steps", "100"), "--samples must be at least 2"),
    ("count", grad("--samples", "-3", "--steps", "100"), "--samples must be at least 2"),
    ("count", grad("--steps", "-5", "--samples", "2"), "--steps must be positive"),
    ("count", grad("--steps", "0", "--samples", "2"), "--steps must be positive"),
    ("count", grad("--burn-in", "-1", *CHEAP[:2]), "--burn-in must be >= 0"),
    (
        "count",
        grad("--unstable-dim", "2", "--segments", "0", method="shadowing"),
        "--segments must be at least 2",
    ),
    (
        "count",
        grad("--unstable-dim", "2", "--segment-steps", "0", method="shadowing"),
        "--segment-steps must be positive",
    ),
    ("count", grad("--truncation", "0", *CHEAP, method="truncated"), "--truncation must be"),
    ("count", grad("--batch", "0", "--samples", "2", method="kernel"), "--batch must be"),
    ("count", ["lyapunov", "henon", "--k", "0"], "--k must be positive"),
    ("count", ["lyapunov", "henon", "--steps", "0"], "--steps must be positive"),
    ("count", ["lyapunov", "henon", "--renorm-every", "0"], "--renorm-every must be"),
    (
        "count",
        ["lyapunov", "henon", "--renorm-every", "often"],
        'positive whole number or "auto"',
    ),
    ("count", ["experiment", "tune-lorenz", "--iterations", "0"], "--iterations must be"),
    ("count", ["lyapunov", "henon", "--k", "2.5"], "'--k'"),
    ("count", grad("--samples", "abc"), "'--samples'"),
    ("count", grad("--samples", "2.5"), "'--samples'"),
    ("count", grad("--samples", str(10**20)), "--samples is too large"),
    ("count", ["lyapunov", "henon", "--seed", str(2**64)], "--seed is too large"),
    ("real", grad("--eps", "nan", *CHEAP, method="fd"), "--eps must be a finite number"),
    ("real", grad("--eps", "inf", *CHEAP, method="fd"), "--eps must be a finite number"),
    ("real", grad("--eps", "-0.1", *CHEAP, method="fd"), "--eps must be a number > 0"),
    ("real", grad("--alpha", "-1", *CHEAP, method="path-kernel"), "--alpha must be"),
    ("real", grad("--alpha", "nan", *CHEAP, method="path-kernel"), "--alpha must be a finite"),
    ("real", ["learn", "--data", "{npy}", "--dt", "nan"], "--dt must be a finite number"),
    ("real", ["learn", "--data", "{npy}", "--dt", "0.01", "--budget", "-1"], "--budget must be"),
    ("usage", grad("--bogus", "3"), "--bogus"),
    ("usage", grad("--steps", "10", "--steps", "20"), "--steps is given twice: give it once"),
    ("usage", grad("--method", "fd", *CHEAP), "--method is given twice"),
    (
        "usage",
        ["benchmark", "trainability", "--out", "{file}", "--budget", "1", "--budget", "2"],
        "--budget is given twice",
    ),
    ("real", grad("--eps", "1e-300", *CHEAP, method="fd"), "eps=1e-300 is lost in rounding"),
    ("real", ["learn", "--data", "{npy}", "--dt", "1e300"], "--dt 1e+300 is too large"),
    ("real", ["learn", "--data", "{npy}", "--dt", "1e-300"], "--dt 1e-300 is too small"),
    ("real", ["learn", "--data", "{complex}", "--dt", "0.01"], "complex128, and learn fits real"),
    ("real", ["learn", "--data", "{huge}", "--dt", "0.01"], "overflow float64 when squared"),
    ("usage", ["grad", "lorenz63", "--method", "backprop"], "'--wrt'"),
    # -p name=value: typed by the parameter's default
    ("param", grad("-p", "rho=nan", *CHEAP), "-p rho=nan: rho must be a finite number"),
    ("param", grad("-p", "rho=inf", *CHEAP), "-p rho=inf: rho must be a finite number"),
    ("param", grad("-p", "rho=-inf", *CHEAP), "rho must be a finite number"),
    ("param", grad("-p", "rho=abc", *CHEAP), "-p rho=abc: rho must be a number"),
    ("param", grad("-p", "rho=", *CHEAP), "rho must be a number"),
    ("param", ["lyapunov", "tanh_rnn", "-p", "n=3.7"], "-p n=3.7: n must be an integer"),
    ("param", ["lyapunov", "lorenz96", "-p", "n=4.5"], "n must be an integer"),
    ("param", ["lyapunov", "tanh_rnn", "-p", "n=-3"], "n must be positive"),
    ("param", ["lyapunov", "tanh_rnn", "-p", "n=0"], "n must be positive"),
    ("param", ["lyapunov", "tanh_rnn", "-p", "continuous=maybe"], "continuous is true or false"),
    ("param", ["lyapunov", "deep_tanh_net", "-p", "depth=0"], "depth must be positive"),
    ("param", ["lyapunov", "lorenz63", "-p", "dt=0"], "dt must be positive"),
    ("param", ["lyapunov", "lorenz63", "-p", "rho=1", "-p", "rho=2"], "-p rho is given twice"),
    ("param", ["lyapunov", "lorenz63", "-p", "rhoo=3"], "no parameter 'rhoo'"),
    ("param", ["lyapunov", "lorenz63", "-p", "rho"], "-p expects name=value"),
    # observables
    ("expression", grad("--observable", "x**99999999999"), "exponent"),
    ("expression", grad("--observable", "2**2**2**2**2**2"), "exponent"),
    ("expression", grad("--observable", "(" * 1000 + "z" + ")" * 1000), "observable too long"),
    ("expression", grad("--observable", "-" * 100 + "z"), "nested too deeply"),
    ("expression", grad("--observable", "10**400"), "not a finite number"),
    ("expression", grad("--observable", "x[7]"), "'state'"),
    ("expression", grad("--observable", "mean(x**2)"), "'state'"),
    ("expression", grad("--observable", "state[7]"), "dimension 3"),
    ("expression", grad("--observable", "state[1:] + state"), "lengths"),
    ("expression", grad("--observable", "open('f')"), "unknown function"),
    ("expression", grad("--observable", "__import__('os')"), "unknown function"),
    ("expression", grad("--observable", "q + 1"), "unknown name 'q'"),
    ("expression", grad("--observable", "z +"), "cannot parse"),
    # NaN or inf from the observable or the parameters
    ("nonfinite", grad("--observable", "log(z - 100)", *CHEAP), "is not finite"),
    ("nonfinite", grad("--observable", "1/(z - z)", *CHEAP), "is not finite"),
    (
        "nonfinite",
        ["compare", "lorenz63", "--wrt", "rho", "--methods", "backprop,fd"]
        + ["--observable", "log(z - 100)", *CHEAP],
        "is not finite",
    ),
    ("nonfinite", grad("-p", "rho=1e12", *CHEAP), "NaN/inf"),
    # one sample: no standard error
    ("samples", grad("--samples", "1", "--steps", "100"), "--samples must be at least 2"),
    (
        "samples",
        grad("--samples", "1", "--steps", "5", system="nine_neuron_net", wrt="gamma"),
        "standard error",
    ),
    # outputs that cannot be written: refused before computing
    ("out", grad(*CHEAP, "--out", "/proc/forbidden"), "--out /proc/forbidden cannot be written"),
    ("out", grad(*CHEAP, "--out", "{file}"), "is a file, not a directory"),
    (
        "out",
        ["compare", "lorenz63", "--wrt", "rho", "--methods", "backprop", *CHEAP, "--out", "{file}"],
        "is a file",
    ),
    ("out", ["lyapunov", "henon", "--out", "{file}/sub"], "cannot be written"),
    ("out", ["experiment", "tune-lorenz", "--out", "{file}"], "is a file"),
    ("out", ["demo", "--out", "{file}"], "is a file"),
    ("out", ["learn", "--data", "{npy}", "--dt", "0.01", "--out", "{file}"], "is a file"),
    ("out", ["benchmark", "trainability", "--out", "{file}"], "is a file"),
    ("out", ["lyapunov", "henon", "--checkpoint", "{file}/sub"], "a-file/sub cannot be written"),
    (
        "out",
        grad(
            "--unstable-dim", "2", "--segments", "4", "--checkpoint", "{file}", method="shadowing"
        ),
        "a-file is a file, not a directory",
    ),
    # the design's list: names, shapes, dimensions, noise
    ("design", ["lyapunov", "lorenz64"], "unknown system 'lorenz64'"),
    ("design", grad(wrt="rhoo"), "no parameter 'rhoo'"),
    ("design", grad(wrt="rho,rho"), "--wrt names 'rho' twice"),
    ("design", grad(method="magic"), "unknown method 'magic'"),
    ("design", ["lyapunov", "henon", "--k", "3"], "exceeds the dimension 2"),
    (
        "design",
        grad("--unstable-dim", "3", "--segments", "4", method="shadowing"),
        "must be smaller than the dimension",
    ),
    ("design", grad(*CHEAP, method="kernel"), "needs a noisy system"),
    ("design", ["compare", "lorenz63", "--wrt", "rho", "--methods", "fd,fd"], "once"),
    (
        "design",
        ["benchmark", "trainability", "--out", "{file}", "--method", "nonsense"],
        "unknown --method 'nonsense'",
    ),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-inputs")
    existing = folder / "a-file"
    existing.write_text("not a directory")
    trajectory = folder / "trajectory.npy"
    states = np.random.default_rng(0).normal(size=(200, 3))
    np.save(trajectory, states)
    np.save(folder / "complex.npy", states + 1j * states)
    np.save(folder / "huge.npy", 1e200 * states)
    return {
        "file": str(existing),
        "npy": str(trajectory),
        "complex": str(folder / "complex.npy"),
        "huge": str(folder / "huge.npy"),
    }


@pytest.mark.parametrize(
    "kind, args, expected", CLI_ROWS, ids=[f"{k}-{' '.join(a)[:60]}" for k, a, _ in CLI_ROWS]
)
def test_command_line_refuses_in_one_line(kind, args, expected, paths):
    args = [arg.format(**paths) if "{" in arg else arg for arg in args]
    result = runner.invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    assert "Traceback" not in result.output
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


def lorenz_z():
    return TimeAverage(lambda x: x[2])


def tiny():
    return Backprop(samples=2, steps=10, burn_in=5, diagnostics=False)


def wrong_shape_map():
    return cg.Map(lambda t, x, a: a * x[:2], args=jnp.asarray(0.5), dim=3)


# (kind, call, error type, words the one-line message contains)
API_ROWS = [
    ("samples", lambda: Backprop(samples=1), ValueError, ["samples must be at least 2"]),
    ("samples", lambda: TruncatedBackprop(truncation=2, samples=1), ValueError, ["samples"]),
    ("samples", lambda: FiniteDifference(samples=1), ValueError, ["samples must be at least 2"]),
    ("samples", lambda: Kernel(samples=1), ValueError, ["standard error"]),
    ("samples", lambda: PathKernel(samples=1, alpha=1.0), ValueError, ["samples"]),
    ("samples", lambda: Backprop(samples=2.0), TypeError, ["samples must be an integer"]),  # pyright: ignore[reportArgumentType]
    ("real", lambda: FiniteDifference(eps=float("inf")), ValueError, ["eps", "finite"]),
    ("real", lambda: FiniteDifference(eps=float("nan")), ValueError, ["eps", "finite"]),
    ("real", lambda: PathKernel(samples=2, alpha=float("inf")), ValueError, ["alpha"]),
    ("param", lambda: cg.TanhRNN(n=-3), ValueError, ["n must be positive"]),
    ("param", lambda: cg.TanhRNN(n=0), ValueError, ["n must be positive"]),
    ("param", lambda: cg.TanhRNN(n=2.5), TypeError, ["n must be an integer"]),  # pyright: ignore[reportArgumentType]
    ("param", lambda: cg.Lorenz96(n=4.5), TypeError, ["n must be an integer"]),  # pyright: ignore[reportArgumentType]
    ("param", lambda: cg.Lorenz63(rho=float("nan")), ValueError, ["rho must be finite"]),
    ("param", lambda: cg.Lorenz63(dt=float("inf")), ValueError, ["dt", "finite"]),
    ("param", lambda: cg.Tent(noise=float("nan")), ValueError, ["noise"]),
    ("param", lambda: cg.DeepTanhNet(depth=0), ValueError, ["depth must be positive"]),
    ("param", lambda: cg.Map(lambda t, x, a: x, dim=-1), ValueError, ["dim must be positive"]),
    ("param", lambda: cg.Map(lambda t, x, a: x, noise=float("nan")), ValueError, ["noise"]),
    ("param", lambda: cg.Flow(lambda t, x, a: -x, float("inf")), ValueError, ["dt"]),
    (
        "key",
        lambda: linear_response(cg.Lorenz63(), lorenz_z(), tiny(), key=0),
        TypeError,
        ["key must be a JAX PRNG key", "jax.random.key(0)"],
    ),
    (
        "key",
        lambda: lyapunov_spectrum(cg.Henon(), steps=10, burn_in=0, key=0),
        TypeError,
        ["key must be a JAX PRNG key"],
    ),
    ("key", lambda: simulate(cg.Henon(), steps=10, key=0), TypeError, ["key must be a JAX"]),
    (
        "key",
        lambda: cg.fit(
            cg.Henon(),
            lambda s: s,
            TimeAverage(lambda x: x[0]),
            Backprop(samples=2, steps=10),
            optax.sgd(0.1),
            iterations=1,
            key=0,
        ),
        TypeError,
        ["key must be a JAX PRNG key"],
    ),
    ("samples", lambda: cg.Auto(samples=1), ValueError, ["samples must be at least 2"]),
    (
        "orbits",
        lambda: cg.Shadowing(unstable_dim=1, segment_steps=5, orbits=0),
        ValueError,
        ["orbits"],
    ),
    (
        "unstable_dim",
        lambda: cg.Shadowing(unstable_dim="two", segment_steps=5),
        ValueError,
        ["unstable_dim must be an integer or 'auto'"],
    ),
    (
        "key",
        lambda: simulate(cg.Henon(), steps=10, key=jax.random.split(KEY, 2)),
        ValueError,
        ["key must be one PRNG key"],
    ),
    (
        "state",
        lambda: simulate(cg.Henon(), jnp.array([True, False]), steps=10, key=KEY),
        TypeError,
        ["x0 has dtype bool"],
    ),
    (
        "state",
        lambda: simulate(cg.Henon(), jnp.array([1.0, 2.0], jnp.float32), steps=10, key=KEY),
        TypeError,
        ["x0 has dtype float32", "float64"],
    ),
    (
        "state",
        lambda: simulate(cg.Lorenz63(), jnp.array([1.0, 2.0]), steps=10, key=KEY),
        ValueError,
        ["x0 has 2 components", "dim=3"],
    ),
    (
        "state",
        lambda: linear_response(cg.Lorenz63(), lorenz_z(), tiny(), x0=jnp.ones((2, 2)), key=KEY),
        ValueError,
        ["x0 has 2 components", "dim=3"],
    ),
    (
        "step shape",
        lambda: simulate(wrong_shape_map(), steps=10, key=KEY),
        ValueError,
        ["the Map's function returned shape (2,)", "(3,)"],
    ),
    (
        "step shape",
        lambda: linear_response(wrong_shape_map(), TimeAverage(lambda x: x[0]), tiny(), key=KEY),
        ValueError,
        ["the Map's function returned shape (2,)"],
    ),
    (
        "step shape",
        lambda: lyapunov_spectrum(
            cg.Map(lambda t, x, a: jnp.sum(x), dim=3), steps=10, burn_in=0, key=KEY
        ),
        ValueError,
        ["returned shape ()", "(3,)"],
    ),
    (
        "step shape",
        lambda: simulate(cg.Flow(lambda t, x, a: x[:2], 0.01, dim=3), steps=10, key=KEY),
        ValueError,
        ["the Flow's vector_field returned shape (2,)"],
    ),
    (
        "traceable",
        lambda: linear_response(cg.Lorenz63(), TimeAverage(lambda x: float(x[0])), tiny(), key=KEY),
        TypeError,
        ["the observable must be traceable by JAX", "not float()"],
    ),
    (
        "traceable",
        lambda: linear_response(
            cg.Lorenz63(), TimeAverage(lambda x: x[0] if x[0] > 0 else -x[0]), tiny(), key=KEY
        ),
        TypeError,
        ["the observable must be traceable by JAX"],
    ),
    (
        "traceable",
        lambda: simulate(cg.Map(lambda t, x, a: x * float(x[0]), dim=1), steps=3, key=KEY),
        TypeError,
        ["the Map's function must be traceable by JAX"],
    ),
    (
        "nonfinite",
        lambda: linear_response(
            cg.Lorenz63(), TimeAverage(lambda x: jnp.log(x[0] - 100)), tiny(), key=KEY
        ),
        FloatingPointError,
        ["the statistic TimeAverage", "not finite"],
    ),
    (
        "nonfinite",
        lambda: linear_response(
            cg.Logistic(),
            Terminal(lambda x: 1 / (x[0] - x[0]), 3),
            FiniteDifference(samples=2),
            key=KEY,
        ),
        FloatingPointError,
        ["not finite"],
    ),
    (
        "nonfinite",
        lambda: simulate(cg.Map(lambda t, x, a: 1e200 * x, dim=1), jnp.ones(1), steps=5),
        FloatingPointError,
        ["NaN/inf at step 2"],
    ),
    (
        "design",
        lambda: linear_response(
            cg.Lorenz63(),
            lorenz_z(),
            Shadowing(unstable_dim=3, segment_steps=10, segments=4),
            key=KEY,
        ),
        ValueError,
        ["unstable_dim=3", "smaller than the dimension 3"],
    ),
    (
        "design",
        lambda: linear_response(
            cg.Lorenz63(), Terminal(lambda x: x[0], 5), Kernel(samples=2), key=KEY
        ),
        ValueError,
        ["Kernel needs a noisy system"],
    ),
    (
        "design",
        lambda: simulate(
            cg.Map(lambda t, x, a: a * x, args=jnp.asarray(0.5, jnp.float32), dim=1),
            jnp.ones(1),
            steps=3,
        ),
        TypeError,
        ["float32", "float64"],
    ),
    (
        "design",
        lambda: linear_response(cg.Lorenz63(), lorenz_z(), Backprop, key=KEY),  # pyright: ignore[reportArgumentType]
        TypeError,
        ["estimator must be a chaosgrad estimator"],
    ),
    (
        "design",
        lambda: linear_response(cg.Lorenz63(), lorenz_z(), tiny(), wrt="rho", key=KEY),  # pyright: ignore[reportArgumentType]
        TypeError,
        ["wrt must be None or a function"],
    ),
    (
        "design",
        lambda: Shadowing(unstable_dim=2, segment_steps=10, segments=4, sweep="fast"),  # pyright: ignore[reportArgumentType]
        TypeError,
        ["sweep must be a sweep strategy", "StepByStep()"],
    ),
    (
        "design",
        lambda: linear_response(
            cg.ModifiedSolenoid(dim=5),
            TimeAverage(cg.ModifiedSolenoid.observable),
            cg.FastAdjointResponse(
                unstable_dim=4, segment_steps=5, segments=4, sweep=cg.SegmentParallel()
            ),
            key=KEY,
        ),
        ValueError,
        ["SegmentParallel sweeps the shadowing contribution only", "SegmentJacobians"],
    ),
]


@pytest.mark.parametrize(
    "kind, call, error, words", API_ROWS, ids=[f"{row[0]}-{i}" for i, row in enumerate(API_ROWS)]
)
def test_api_refuses_with_a_named_argument(kind, call, error, words):
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message


def test_row_counts():
    """At least 60 bad inputs, spread over every kind."""
    assert len(CLI_ROWS) + len(API_ROWS) >= 60
    kinds = {row[0] for row in CLI_ROWS} | {row[0] for row in API_ROWS}
    assert kinds >= {"count", "real", "param", "expression", "nonfinite", "samples", "out"}


def test_friendly_conversions_are_exact():
    """What is converted instead of refused: integer states and plain-float args."""
    path = simulate(cg.Lorenz63(), jnp.array([1, 2, 3]), steps=2, key=KEY)
    assert path.dtype == jnp.float64 and path[0].tolist() == [1.0, 2.0, 3.0]
    logistic = cg.Map(lambda t, x, r: r * x * (1 - x), args=3.9, dim=1)
    assert isinstance(logistic.args, jax.Array) and logistic.args.dtype == jnp.float64
    response = linear_response(
        logistic,
        Terminal(lambda x: x[0], 1),
        Backprop(samples=2, diagnostics=False),
        wrt=lambda s: s.args,
        x0=jnp.array([0.3]),
        key=KEY,
    )
    assert float(response.grad) == pytest.approx(0.3 * 0.7)  # d(r x (1 - x))/dr
    mlp = eqx.nn.MLP(2, 2, 4, 1, key=KEY)
    assert cg.Map(lambda t, x, m: m(x), args=mlp, dim=2).args is mlp  # modules untouched


def test_json_is_strict_and_carries_warnings():
    """A finite statistic whose gradient is NaN: null in the JSON, and a warning saying so."""
    result = runner.invoke(
        app, grad("--observable", "sqrt(abs(state[0] - state[0]))", *CHEAP, "--json")
    )
    assert result.exit_code == 0, result.output

    def no_bare_constants(token):
        raise AssertionError(f"bare {token} in the JSON")

    payload = json.loads(result.stdout, parse_constant=no_bare_constants)
    assert payload["grad"]["rho"] is None and payload["value"] == 0.0
    assert any("written as null" in w for w in payload["warnings"])
    assert any("NaN or inf" in w for w in payload["warnings"])


# --- fuzzing --------------------------------------------------------------------------

TOKENS = [
    "x", "y", "z", "state", "pi", "e", "0", "1", "2", "7", "99999", "1e308", ".5",
    "+", "-", "*", "/", "**", "%", "(", ")", "[", "]", ":", ",", " ",
    "mean(", "sum(", "log(", "sqrt(", "exp(", "abs(", "norm(", "max(", "foo(", "j", "_",
    "\n", "\t", "'", "=", "lambda", "if", "True", ".real", "@",
]  # fmt: skip
STATE = jnp.array([1.0, -2.0, 3.0])


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=25),
    names=st.sampled_from([(), ("x", "y", "z")]),
)
def test_fuzz_observable_language(pieces, names):
    """Any text: a traceable observable, or ExpressionError in one line, within 1 s."""
    text = "".join(pieces)
    began = time.perf_counter()
    try:
        observable = parse_observable(text, names)
        shape = jax.eval_shape(observable, STATE)
        assert shape.shape == () and shape.dtype == jnp.float64
    except ExpressionError as exc:
        assert "\n" not in str(exc) and str(exc), repr(text)
    assert time.perf_counter() - began < 1.0, repr(text)


DEFAULTS = {"rho": 28.0, "n": 40, "continuous": False, "method": "rk4"}


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(DEFAULTS)), text=st.text(max_size=12))
def test_fuzz_parameter_values(name, text):
    """-p name=TEXT: a value of the default's type (finite for reals) or one named line."""
    try:
        values = parse_assignments([f"{name}={text}"], DEFAULTS)
    except ValueError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("-p ") and name in message
        return
    value = values[name]
    assert type(value) is type(DEFAULTS[name])
    if isinstance(value, float):
        assert np.isfinite(value)


@settings(max_examples=200, deadline=None)
@given(
    option=st.sampled_from(["--samples", "--steps", "--burn-in", "--eps", "--seed"]),
    text=st.one_of(
        st.integers(-(10**20), 10**20).map(str), st.floats().map(str), st.text(max_size=8)
    ),
)
def test_fuzz_numeric_options(option, text, tmp_path_factory):
    """Random text for a numeric option of `grad`: refused in one line naming the option,
    or accepted (and then the unwritable --out stops the run before any computation)."""
    blocked = tmp_path_factory.getbasetemp() / "fuzz-file"
    blocked.write_text("")
    method = "fd" if option == "--eps" else "backprop"
    args = grad(option, text, "--out", str(blocked), method=method)
    result = runner.invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, (args, result.output)
    assert "Traceback" not in result.output
    assert option in lines[0] or "--out" in lines[0], lines[0]


def test_fuzz_helpers_agree_with_the_table():
    """The option rules the fuzz relies on: values are checked, not defaulted."""
    with pytest.raises(ValueError, match="--samples"):
        check_numbers({"samples": 1})
    check_numbers({"samples": 2, "eps": 0.1, "burn_in": 0})
    assert set(settable_parameters(cg.Lorenz63)) == {"rho", "sigma", "beta", "dt", "method"}
    system, params = build_system("lorenz63", ["rho=30"])
    assert float(getattr(system, "rho")) == 30.0 and params["rho"] == 30.0  # noqa: B009
