"""Shared pieces of the comparison experiments: a result type and summaries of fits."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..train import FitResult


@dataclass
class ExperimentResult:
    """What an experiment measured (JSON-ready ``summary``) and the files it wrote."""

    name: str
    summary: dict
    files: list[str] = field(default_factory=list)

    def write_json(self, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.name}.json"
        path.write_text(json.dumps(self.summary, indent=2, default=_jsonable) + "\n")
        self.files.append(path.name)
        return path


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def fit_summary(result: FitResult, label: str) -> dict:
    """The history and outcome of one training run."""
    history = result.history
    losses = [v for v in history["loss"] if np.isfinite(v)]
    return {
        "label": label,
        "status": result.status,
        "iterations": result.iterations,
        "final_loss": history["loss"][-1] if history["loss"] else None,
        "final_loss_mean_last5": float(np.mean(history["loss"][-5:])) if losses else None,
        "seconds": float(np.sum(history["seconds"])),
        "loss": history["loss"],
        "statistic": history["statistic"],
        "parameters": history["parameters"],
        "grad_norm": history["grad_norm"],
    }
