"""Loss curves: one row per logged step, written as CSV + JSON and drawn as a PNG (one panel per loss term)."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

LOSS_TERMS = ("loss", "flow", "cogkd", "balance", "future", "env_state")  # MoLePolicy.forward's parts
COLUMNS = (
    "step",
    "stage",
    "budget",
    *LOSS_TERMS,
    "active_fraction",
    "lr",
    "samples_per_s",
)


def write_curves(history: list[dict[str, float | str]], out: Path) -> None:
    """out/curves.csv, out/curves.json and out/curves.png from the logged rows (no-op without rows)."""
    if not history:
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "curves.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    (out / "curves.json").write_text(json.dumps(history, indent=1) + "\n")
    _plot(history, out / "curves.png")


def _plot(history: list[dict[str, float | str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless: training runs on machines without a display
    import matplotlib.pyplot as plt

    terms = LOSS_TERMS
    fig, axes = plt.subplots(1, len(terms), figsize=(4 * len(terms), 3.2))
    steps = [row["step"] for row in history]
    stage_change = [row["step"] for prev, row in itertools.pairwise(history) if row["stage"] != prev["stage"]]
    for ax, term in zip(axes, terms, strict=True):
        ax.plot(steps, [row.get(term, 0.0) for row in history], lw=1.2)
        for step in stage_change:
            ax.axvline(step, color="grey", ls="--", lw=0.8)
        ax.set_title(term)
        ax.set_xlabel("step")
        if term in ("loss", "flow") and all(float(row[term]) > 0 for row in history):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.suptitle("mole-vla train (dashed: stage change full -> router)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
