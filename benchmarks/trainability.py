"""The shortened trainability benchmark (`make bench`): every task and method, quick sizes,
3 seeds, 5 s of training per run. The full run is

    chaosgrad benchmark trainability --budget 30 --seeds 3 --out DIR

whose trainability.json is kept in benchmarks/results/trainability.json.
"""

from __future__ import annotations

from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

from chaosgrad.experiments.trainability import run_trainability, table_rows  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    out = RESULTS / "trainability-quick"
    result = run_trainability(budget=5.0, seeds=3, quick=True, out=out, progress=print)
    for row in table_rows(result.summary):
        print(row)
    print(f"wrote {out} in {result.summary['seconds']:.0f} s")


if __name__ == "__main__":
    main()
