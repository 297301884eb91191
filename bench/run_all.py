"""Run every benchmark, one after another, and write bench/results/summary.md (the README's benchmark table).

    make bench                                   # everything (about 30-40 min on 2 CPU cores)
    scripts/run_in_env.sh python bench/run_all.py --only policy compare_lerobot

Each benchmark is a short script of its own (settings at its top) that writes bench/results/<name>.json and a PNG;
this runner only sequences them, so they never compete for the CPU, and collects their headline numbers.
The LeRobot comparison needs the peer's own environment (bench/peer/setup_lerobot.sh); it is set up first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
ORDER = (
    "driver",
    "sim",
    "executor",
    "async_sync",
    "latency",
    "policy",
    "compare_lerobot",
    "recorder",
    "collision",
    "train_throughput",
    "remote",
)


def scripts() -> dict[str, Path]:
    found = {p.stem.removeprefix("bench_"): p for p in BENCH.glob("bench_*.py")}
    found["compare_lerobot"] = BENCH / "compare_lerobot.py"
    return {name: found[name] for name in ORDER if name in found and found[name].is_file()} | {
        name: path for name, path in sorted(found.items()) if name not in ORDER
    }


def run(name: str, path: Path) -> dict:
    if name == "compare_lerobot":
        setup = subprocess.run([str(BENCH / "peer" / "setup_lerobot.sh")], cwd=ROOT)
        if setup.returncode != 0:
            return {"name": name, "ok": False, "seconds": 0.0, "error": "LeRobot peer environment could not be set up"}
    print(f"\n=== {name}: {path.relative_to(ROOT)}", flush=True)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(path)], cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return {"name": name, "ok": proc.returncode == 0, "seconds": round(time.monotonic() - start, 1)}


def summary(rows: list[dict]) -> str:
    lines = ["| benchmark | ran | seconds | results |", "| --- | --- | --- | --- |"]
    for row in rows:
        files = sorted(p.name for p in RESULTS.glob(f"{row['name']}*") if p.suffix in (".json", ".png"))
        lines.append(f"| {row['name']} | {'yes' if row['ok'] else 'FAILED'} | {row['seconds']} | {', '.join(files)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="benchmark names (default: all)")
    args = parser.parse_args(argv)
    available = scripts()
    chosen = args.only or list(available)
    unknown = set(chosen) - set(available)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; have {sorted(available)}")
    rows = [run(name, available[name]) for name in chosen]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.md").write_text(summary(rows))
    (RESULTS / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n" + summary(rows))
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
