"""Control task: learn Lorenz-63 from one time series, against the state of the art of
dynamical-systems reconstruction (teacher forcing and measure matching).

T2's data, model and metrics (:mod:`.t2_lorenz`: a 10^5-step Lorenz-63 series, an MLP vector
field of 2,691 weights, D_stsp, D_H, lambda_1's error and the held-out prediction MSE), with
the methods a reconstruction paper would compare:

* BPTT on 10-step windows + clipping (T2's winner);
* generalized teacher forcing (Hess et al., ICML 2023), windows of 50;
* sparse teacher forcing (Mikhaeil et al., NeurIPS 2022) at its published Lorenz-63
  setting: sequences of 100 steps, reset every tau = 30;
* measure matching (DySLIM, Schiff et al., ICML 2024): the 10-step MSE plus MMD^2 of the
  data's samples pushed 10 steps through the model, weight 1;
* the seed method, balanced: the 10-step MSE plus the long-time moments' squared errors
  by Shadowing, each moment in units of its variance over the data
  (``StatisticsLoss(scale="variance")``) and entering only after a warm-up of
  ``warmup`` iterations on the MSE alone. Both fixes, and why: T2's version used the
  relative error from the first iteration, when the untrained model runs off the data and
  that term's gradient was about 10^4 x the MSE's.

Every method trains by Adam with norm clipping at 1, its learning rate tuned on the grid.
Why the seed method should not win: the published methods are the state of the art on this
problem; reconstruction needs the short-term dynamics first, which the MSE teaches, and the
statistics term can add only what the moments constrain.

Pre-registered success: D_stsp below 2 at the end (T2's BPTT-10 reached 1.16 +- 0.29 in
30 s; an untrained or non-chaotic model is above 6).

The cut-down: the published runs take 30 000 (STF) to 250 000 (GTF) steps; here every
method gets the same wall-clock budget on this machine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...reconstruct import BPTT, GTF, STF, MeasureMatching, StatisticsLoss
from ._harness import thinned
from .t2_lorenz import T2Settings, T2Task

METHODS = (
    "bptt-10+clip",
    "gtf",
    "stf",
    "measure-matching",
    "statistics(balanced)",
)
SUCCESS = 2.0
"""Pre-registered: D_stsp below 2 at the end."""


@dataclass(frozen=True)
class ControlT2Settings(T2Settings):
    stf_window: int = 100
    stf_tau: int = 30
    measure_window: int = 10
    warmup: int = 300
    grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2)

    @classmethod
    def quick(cls) -> ControlT2Settings:
        return replace(
            cls(),
            steps=20_000,
            eval_steps=5000,
            exponent_steps=5000,
            stf_window=20,
            stf_tau=10,
            warmup=2,
        )


class ControlT2Task(T2Task):
    """The control (module doc)."""

    name = "control-T2"
    methods = METHODS

    def __init__(self, settings: ControlT2Settings | None = None):
        super().__init__(settings or ControlT2Settings())
        self.settings: ControlT2Settings
        self.grid = self.settings.grid

    def options(self, method: str) -> dict:
        s = self.settings
        if method == "bptt-10+clip":
            return {"method": BPTT(), "window": 10}
        if method == "gtf":
            return {"method": GTF(), "window": s.gtf_window}
        if method == "stf":
            return {"method": STF(tau=s.stf_tau), "window": s.stf_window}
        if method == "measure-matching":
            return {"method": MeasureMatching(weight=1.0), "window": s.measure_window}
        if method == "statistics(balanced)":
            balanced = StatisticsLoss(scale="variance", warmup=s.warmup)
            return {"method": balanced, "window": s.statistics_window}
        raise ValueError(f"unknown {self.name} method {method!r}; choose from {METHODS}")

    def run(self, method: str, seed: int, budget: float | None, eval_every: float, **options):
        run, fit = self.train(
            method,
            seed,
            budget,
            eval_every,
            options.get("iterations"),
            options.get("learning_rate"),
        )
        # the gradient's size along the run: what tells a swamped term from a balanced one
        run.extra["grad_norm"] = thinned(fit.history["grad_norm"])
        for name in ("tau", "unstable_dim", "skipped_statistics_terms"):
            if fit.history.get(name):
                run.extra[name] = fit.history[name]
        if fit.history.get("mmd2"):
            run.extra["mmd2"] = thinned(fit.history["mmd2"])
        run.extra["success"] = bool(run.metrics[-1].get("d_stsp", float("inf")) < SUCCESS)
        return run
