"""The `chaosgrad` command keeps JAX's compiled programs in a persistent cache folder.

Functional checks in fresh processes (the command's entry point), never wall-clock ones:
the first run fills the folder, a second run reads it (JAX logs a persistent-cache hit
and the folder gets no new entries), and the switches turn it off.
"""

import json
import os
import subprocess
import sys

from chaosgrad.cli.cache import cache_directory

GRAD = [
    "grad",
    "lorenz63",
    "--wrt",
    "rho",
    "--method",
    "fd",
    "--steps",
    "100",
    "--burn-in",
    "10",
    "--samples",
    "2",
    "--json",
]


def chaosgrad(*args, env):
    """Run the `chaosgrad` console script's entry point in a new process."""
    code = "import sys; from chaosgrad.cli import main; sys.argv[0] = 'chaosgrad'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "JAX_PLATFORMS": "cpu", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def entries(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_second_process_reads_the_first_ones_compiled_programs(tmp_path):
    cache = tmp_path / "cache"
    env = {"CHAOSGRAD_CACHE_DIR": str(cache), "JAX_LOG_COMPILES": "1"}
    first = chaosgrad(*GRAD, env=env)
    assert first.returncode == 0, first.stderr
    written = entries(cache)
    assert written, "the first run wrote no cache entries"

    second = chaosgrad(*GRAD, env=env)
    assert second.returncode == 0, second.stderr
    assert "Persistent compilation cache hit" in second.stderr
    assert entries(cache) == written  # everything was found; nothing compiled anew
    assert json.loads(second.stdout) == {
        **json.loads(first.stdout),
        "seconds": json.loads(second.stdout)["seconds"],
    }


def test_the_cache_is_the_commands_and_can_be_turned_off(tmp_path):
    """`chaosgrad systems` compiles nothing, so only the command itself can have made the
    folder: it does by default, and not with --no-cache or CHAOSGRAD_CACHE_DIR=""."""
    on = chaosgrad("systems", env={"CHAOSGRAD_CACHE_DIR": str(tmp_path / "on")})
    assert on.returncode == 0, on.stderr
    assert (tmp_path / "on").is_dir()
    off = chaosgrad("--no-cache", "systems", env={"CHAOSGRAD_CACHE_DIR": str(tmp_path / "off")})
    assert off.returncode == 0, off.stderr
    assert not (tmp_path / "off").exists()
    empty = chaosgrad("systems", env={"CHAOSGRAD_CACHE_DIR": "", "XDG_CACHE_HOME": str(tmp_path)})
    assert empty.returncode == 0, empty.stderr
    assert not (tmp_path / "chaosgrad").exists()


def test_in_process_use_leaves_jax_configuration_alone(tmp_path, monkeypatch):
    """The app called in-process (CliRunner, a notebook) does not turn the cache on."""
    import jax
    from typer.testing import CliRunner

    from chaosgrad.cli import app

    monkeypatch.setenv("CHAOSGRAD_CACHE_DIR", str(tmp_path / "cache"))
    before = jax.config.jax_compilation_cache_dir
    assert CliRunner().invoke(app, ["systems"]).exit_code == 0
    assert jax.config.jax_compilation_cache_dir == before
    assert not (tmp_path / "cache").exists()


def test_the_folder_is_the_users_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("CHAOSGRAD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_directory() == tmp_path / "chaosgrad" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_directory() == tmp_path / ".cache" / "chaosgrad" / "jax"
    monkeypatch.setenv("CHAOSGRAD_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_directory() == tmp_path / "mine"
    monkeypatch.setenv("CHAOSGRAD_CACHE_DIR", "")
    assert cache_directory() is None
