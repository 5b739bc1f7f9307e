"""Where sample-parallel work runs: one 1-D mesh over every device of every process.

Samples of Backprop, TruncatedBackprop, Kernel, PathKernel and FiniteDifference, the orbits
of ``Shadowing(orbits=R)``, ``FastAdjointResponse(orbits=R)`` and
``lyapunov_spectrum(orbits=R)`` are independent: one vmapped computation does all of them.
Inside that compiled computation the sample axis is laid on a 1-D mesh over
``jax.devices()`` (:func:`spread`), so XLA runs each device's share there, and the results
are reduced or all-gathered to every device (:func:`collect`); the host code then sees
ordinary arrays (:func:`local`). Nothing else changes: every sample's arithmetic is the same
whatever the layout, so an estimate differs between layouts only by the order of the
final sums (about 1e-16 relative), and its standard error comes from all samples.

The mesh spans:

* one process, several devices: e.g. ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
  on a CPU;
* several processes or hosts: :func:`initialize` joins them with
  ``jax.distributed.initialize`` (CPU collectives through gloo). Every process runs the same
  program on the same inputs (SPMD); each computes its share of the samples and receives
  the reduced result. ``chaosgrad ... --processes N`` starts N local processes; on several
  hosts, run the same command on each with the environment variables below.

A sample count that is not a multiple of the device count runs unsplit (every device
computes all samples; same answer, no speed-up).

Work that cannot step together, such as the training runs of a benchmark, each on its own
wall-clock budget, is split by whole runs instead: inside :func:`each_process_alone` every
process computes alone on its own devices, and :func:`gather_json` brings every process's
results to all of them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._errors import is_traced

COORDINATOR = "CHAOSGRAD_COORDINATOR"
"""Environment variable: the coordinator's ``host:port`` (process 0 listens there)."""
PROCESSES = "CHAOSGRAD_PROCESSES"
"""Environment variable: the total number of processes."""
PROCESS_ID = "CHAOSGRAD_PROCESS_ID"
"""Environment variable: this process's id, 0 .. processes - 1."""
CPUS = "CHAOSGRAD_CPUS"
"""Environment variable: the CPU cores this process may run on, e.g. ``0,1`` (optional; the
``--processes N`` launcher gives each of its processes its own share of the machine's)."""

AXIS = "samples"


def initialize(
    coordinator: str | None = None, processes: int | None = None, process_id: int | None = None
) -> bool:
    """Join the processes of one run (``jax.distributed.initialize`` with gloo collectives).

    Arguments default to ``$CHAOSGRAD_COORDINATOR``, ``$CHAOSGRAD_PROCESSES`` and
    ``$CHAOSGRAD_PROCESS_ID``. Returns False (and does nothing else) for a single process.
    Call it before any JAX computation, once per process, with the same coordinator
    everywhere.

    With ``$CHAOSGRAD_CPUS`` set (Linux), the process is first held to those cores, before
    XLA sizes its thread pool: several processes on one machine then split its cores
    instead of each running threads on all of them (a 2-process Kernel run on 2 cores:
    0.92 s bound, 1.32 s unbound).
    """
    bind_cpus()
    coordinator = coordinator or os.environ.get(COORDINATOR)
    processes = processes if processes is not None else _env_int(PROCESSES)
    process_id = process_id if process_id is not None else _env_int(PROCESS_ID)
    if processes is None or processes == 1:
        return False
    if processes < 1:
        raise ValueError(f"{PROCESSES} must be a positive integer, got {processes}")
    if not coordinator or ":" not in coordinator:
        raise ValueError(
            f"{COORDINATOR} must be the coordinator's host:port for {processes} processes, "
            f"got {coordinator!r}"
        )
    if process_id is None or not 0 <= process_id < processes:
        raise ValueError(
            f"{PROCESS_ID} must be an integer in 0..{processes - 1} for {processes} "
            f"processes, got {process_id!r}"
        )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=processes, process_id=process_id)
    return True


def bind_cpus(text: str | None = None) -> set[int] | None:
    """Hold this process to the cores in ``text`` (default ``$CHAOSGRAD_CPUS``), a comma
    list such as ``0,1``; returns them, or None when unset or unsupported (not Linux)."""
    text = os.environ.get(CPUS, "") if text is None else text
    if not text.strip() or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        cores = {int(part) for part in text.split(",")}
    except ValueError:
        cores = set()
    available = os.sched_getaffinity(0)
    if not cores or not cores <= available:
        raise ValueError(
            f"{CPUS} must be a comma list of this machine's cores (available: "
            f"{','.join(map(str, sorted(available)))}), got {text!r}"
        )
    os.sched_setaffinity(0, cores)
    return cores


def cpu_shares(processes: int, cores: list[int] | None = None) -> list[str] | None:
    """``$CHAOSGRAD_CPUS`` for each of ``processes`` local processes: the cores (default:
    those this process may use) in contiguous, near-equal shares; None when there are
    fewer cores than processes (the processes then share them all)."""
    if cores is None:
        if not hasattr(os, "sched_getaffinity"):
            return None
        cores = sorted(os.sched_getaffinity(0))
    cores = sorted(cores)
    if processes > len(cores):
        return None
    bounds = [round(i * len(cores) / processes) for i in range(processes + 1)]
    return [",".join(map(str, cores[a:b])) for a, b in zip(bounds, bounds[1:], strict=False)]


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {text!r}") from None


def is_main_process() -> bool:
    """True in the process that writes results (process 0; the only one when alone)."""
    return jax.process_index() == 0


_ALONE = {"on": False}


@contextlib.contextmanager
def each_process_alone():
    """Inside: every process computes on its own devices only (the mesh spans this
    process's devices), so the processes may run different computations, e.g. their own
    share of a benchmark's training runs, and exchange results with :func:`gather_json`.

    Enter it around all of a process's work: a function compiled outside keeps the mesh of
    every process (and would wait for the others)."""
    before = _ALONE["on"]
    _ALONE["on"] = True
    try:
        yield
    finally:
        _ALONE["on"] = before


def _mesh_devices() -> list:
    return jax.local_devices() if _ALONE["on"] else jax.devices()


_GATHERS = {"count": 0}
GATHER_TIMEOUT_MS = 7 * 24 * 3600 * 1000
"""How long :func:`gather_json` waits for the slowest process (a week: a benchmark's
processes may finish hours apart)."""


def gather_json(value, default=None) -> list:
    """``value`` of every process, in process order, as ``json.loads(json.dumps(value,
    default=default))`` (NaN and infinities kept); in one process, ``[that]``. A collective:
    every process must call it, in the same order.

    The values travel through the coordination service's key-value store, not a device
    collective: a device collective times out when one process arrives much earlier than
    another (a benchmark's processes finish their runs minutes apart), the store waits
    (``GATHER_TIMEOUT_MS``). A barrier at the end keeps the coordinator alive until every
    process has read every value."""
    text = json.dumps(value, default=default)
    if jax.process_count() == 1:
        return [json.loads(text)]
    from jax._src import distributed

    client = distributed.global_state.client
    assert client is not None  # initialised: process_count() > 1
    _GATHERS["count"] += 1
    prefix = f"chaosgrad/gather/{_GATHERS['count']}"
    client.key_value_set(f"{prefix}/{jax.process_index()}", text)
    texts = [
        client.blocking_key_value_get(f"{prefix}/{i}", GATHER_TIMEOUT_MS)
        for i in range(jax.process_count())
    ]
    client.wait_at_barrier(f"{prefix}/read", GATHER_TIMEOUT_MS)
    return [json.loads(t) for t in texts]


def device_count() -> int:
    """Devices of the mesh: every device of every process (this process's alone inside
    :func:`each_process_alone`)."""
    return len(_mesh_devices())


def sample_sharding(count: int) -> NamedSharding | None:
    """The sample axis of length ``count`` on the 1-D mesh, or None (one device, or
    ``count`` not a multiple of the device count: the samples then run unsplit)."""
    devices = _mesh_devices()
    if len(devices) < 2 or count % len(devices):
        return None
    return NamedSharding(Mesh(np.array(devices), (AXIS,)), PartitionSpec(AXIS))


def per_device(count: int) -> int:
    """How many of ``count`` samples each device computes: count / devices when the
    samples split over the mesh (:func:`sample_sharding`), else all of them."""
    devices = device_count()
    return count // devices if sample_sharding(count) is not None else count


def spread(tree):
    """Inside a compiled function: lay every leaf of ``tree`` (the same leading axis: the
    samples) on the mesh. Identity on one device."""
    sharding = sample_sharding(jax.tree_util.tree_leaves(tree)[0].shape[0])
    if sharding is None:
        return tree
    return jax.tree_util.tree_map(
        lambda leaf: jax.lax.with_sharding_constraint(leaf, sharding), tree
    )


def map_samples(function, *arrays):
    """``jax.vmap(function)`` over the leading (sample) axis of ``arrays``, spread over the
    mesh. One sample runs unbatched (its axis added back): a batch of one costs more per
    step than the plain loop (extra transposes in every iteration of a scan).

    On several devices each runs ``jax.vmap(function)`` on its own samples
    (``jax.shard_map``), so that a loop over the batch stays on the device: left to the
    partitioner, the one-at-a-time library calls of ``_linalg`` (a loop over the batch)
    all-gathered the batch in every iteration, and FAR with 16 orbits in 2 processes took
    1.33 s instead of 0.17 s."""
    count = jax.tree_util.tree_leaves(arrays)[0].shape[0]
    if count == 1:
        single = jax.tree_util.tree_map(lambda leaf: leaf[0], arrays)
        return jax.tree_util.tree_map(lambda leaf: leaf[None], function(*single))
    sharding = sample_sharding(count)
    if sharding is None:
        return jax.vmap(function)(*arrays)
    local = jax.shard_map(
        jax.vmap(function),
        mesh=sharding.mesh,
        in_specs=PartitionSpec(AXIS),
        out_specs=PartitionSpec(AXIS),
        check_vma=False,
    )
    return local(*arrays)


def collect(tree):
    """Inside a compiled function: ``tree`` replicated on every device (sums reduced,
    per-sample arrays all-gathered). Identity on one device.

    Leaves of one dtype and one leading (sample) length are packed side by side, (R, n_1 +
    n_2 + ...), and gathered as one array: between processes each collective through gloo
    costs about 3 ms whatever its size (2 processes on one machine: one 288 KB all-gather
    0.4-4 ms, eight of 1.3 KB 23-28 ms), so a tree is gathered in one collective per
    dtype instead of one per leaf."""
    devices = _mesh_devices()
    if len(devices) < 2:
        return tree
    replicated = NamedSharding(Mesh(np.array(devices), (AXIS,)), PartitionSpec())

    def gathered(leaf):
        return jax.lax.with_sharding_constraint(leaf, replicated)

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = list(leaves)
    groups: dict[tuple, list[int]] = {}
    for i, leaf in enumerate(leaves):
        packable = leaf.ndim >= 1 and not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        if packable:
            groups.setdefault((leaf.dtype, leaf.shape[0]), []).append(i)
        else:
            out[i] = gathered(leaf)
    for (_, rows), members in groups.items():
        widths = [math.prod(leaves[i].shape[1:]) for i in members]
        packed = gathered(
            jax.numpy.concatenate(
                [leaves[i].reshape(rows, w) for i, w in zip(members, widths, strict=True)], axis=1
            )
        )
        edges = np.cumsum([0, *widths])
        for i, a, b in zip(members, edges[:-1], edges[1:], strict=True):
            out[i] = packed[:, a:b].reshape(leaves[i].shape)
    return jax.tree_util.tree_unflatten(treedef, out)


def local(tree):
    """Outside: the replicated arrays :func:`collect` returned, as host arrays that any
    later computation may use (an array committed to the mesh cannot meet one committed to
    a single device). Identity on one device."""
    if len(_mesh_devices()) < 2:
        return tree

    def host(leaf):
        if (
            isinstance(leaf, jax.Array)
            and not is_traced(leaf)  # inside a compiled estimator
            and not jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        ):
            return np.asarray(leaf)
        return leaf

    return jax.tree_util.tree_map(host, tree)


def to_host(array) -> np.ndarray:
    """A (possibly sharded over several processes) array as one numpy array, in every
    process (an all-gather when other processes hold parts of it)."""
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(array)


def sample_parallel(function):
    """Compile ``function`` (``eqx.filter_jit``) for the mesh: its body lays its sample axis
    out with :func:`spread`; its result is collected on every device and returned local."""

    @eqx.filter_jit
    @functools.wraps(function)
    def compiled(*args, **kwargs):
        return collect(function(*args, **kwargs))

    @functools.wraps(function)
    def run(*args, **kwargs):
        return local(compiled(*args, **kwargs))

    return run
