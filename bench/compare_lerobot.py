"""Side-by-side chunk latency: LeRobot's SmolVLA (the peer) vs our MoLe policy, same CPU, one run, batch 1.

One command:

    scripts/run_in_env.sh python bench/compare_lerobot.py [--rounds 5] [--threads 2]

The peer runs in its own venv (`.venv-lerobot`, made by bench/peer/setup_lerobot.sh: lerobot 0.6.1 needs Python >= 3.12
and torch < 2.12) as a long-lived worker process (bench/peer/lerobot_smolvla_worker.py --serve) holding SmolVLA at
16 kept VLM layers (its default) and at 8 (a static cut); our policy runs in this process at budgets 100/50/25% and,
through a forced router, as the same static first-half cut. Both sides: SmolVLM2-500M shapes, random weights,
one 512x512 camera image (no resize on either side), the same instruction padded to 48 tokens, 50-action chunks,
10 Euler steps, the same thread count. Only one side computes at any time (the driver waits on the worker).

Variants are interleaved in rounds (each round runs every variant once, in an order rotated per round) so that drift
on a shared machine lands on both sides alike; ratios are reported both as ratios of medians and as medians of the
per-round paired ratios. Writes bench/results/compare_lerobot.json and compare_lerobot.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

# -- settings ---------------------------------------------------------------------------------------------------
SEED = 0
ROUNDS = 5
THREADS = 2
IMAGE_SIZE = 512  # SmolVLA's vision input; both sides get a 512x512 camera image
BUDGETS = (1.0, 0.5, 0.25)
PEER_LAYERS = (16, 8)
INSTRUCTION = "pick up the red cube and put it in the box"
PEAK_GFLOPS = 170.0  # fp32 matmul peak of this CPU on 2 threads (DESIGN.md section 4)
ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-lerobot" / "bin" / "python"
PEER_WORKER = ROOT / "bench" / "peer" / "lerobot_smolvla_worker.py"
RESULTS = ROOT / "bench" / "results"
STAGES = ("vision", "vlm", "expert")
WORKER_START_TIMEOUT_S = 1200.0  # building two 450M-parameter models on a loaded 2-core machine takes minutes
# The claims from the project brief that this benchmark checks (ours / peer, lower is better).
TARGETS = {
    "ours_50_vs_lerobot_16": 0.5,  # at a 50% budget, at most half of SmolVLA's 16-layer chunk
    "ours_50_vs_lerobot_8": 1.0,  # and faster than its static 8-layer cut (same number of active layers)
}

Sample = dict[str, float]  # seconds: total, vision, vlm, expert, other


# -- the peer ---------------------------------------------------------------------------------------------------
class PeerWorker:
    """LeRobot's SmolVLA in a child process of .venv-lerobot, one JSON request/reply per line."""

    def __init__(self, threads: int, image_size: int, layers: tuple[int, ...], log: IO[str]) -> None:
        if not PEER_PYTHON.exists():
            raise FileNotFoundError(f"{PEER_PYTHON} is missing: run bench/peer/setup_lerobot.sh first")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):  # the project's Python 3.11 paths stay out of 3.12
            env.pop(var, None)
        cmd = [
            str(PEER_PYTHON),
            str(PEER_WORKER),
            "--serve",
            "--threads",
            str(threads),
            "--image-size",
            str(image_size),
            "--instruction",
            INSTRUCTION,
            "--layers",
            *map(str, layers),
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=ROOT
        )
        try:
            self.header = self._read(WORKER_START_TIMEOUT_S)
            if not self.header.get("ready"):
                raise RuntimeError(f"peer worker did not start: {self.header}")
        except BaseException:
            self.close()
            raise

    def _read(self, timeout_s: float) -> dict[str, Any]:
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                raise TimeoutError(f"peer worker gave no answer in {timeout_s:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"peer worker exited (code {self.proc.poll()}); see its log")
        return json.loads(line)

    def sample(self, layers: int, timeout_s: float = 900.0) -> Sample:
        self.proc.stdin.write(json.dumps({"variant": layers, "repeats": 1}) + "\n")
        self.proc.stdin.flush()
        reply = self._read(timeout_s)
        if not reply.get("ok"):
            raise RuntimeError(f"peer worker failed: {reply.get('error')}")
        return reply["samples"][0]

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # EOF ends the worker's request loop
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- our policy -------------------------------------------------------------------------------------------------
def our_batch(image_size: int) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(SEED)
    return {
        "images": [torch.rand(1, 3, image_size, image_size, generator=gen)],
        "instruction": [INSTRUCTION],
        "state": torch.randn(1, 6, generator=gen),
    }


@contextlib.contextmanager
def first_layers_forced(policy: Any) -> Iterator[None]:
    """The router's choice replaced by descending scores, so top-k keeps layers 0..k-1: SmolVLA's static cut."""
    import torch

    from mole_vla_ros.policy.testing import force_router

    n = policy.num_layers
    force_router(policy, torch.linspace(1.0, 0.0, n).softmax(-1)[None])
    try:
        yield
    finally:
        del policy.router.forward  # force_router set an instance attribute; the class method comes back


def our_sample(policy: Any, budget: float, obs: dict[str, Any], noise: Any, static: bool = False) -> Sample:
    """One chunk, with the per-stage seconds the policy measures itself (`ChunkPrediction.timings`)."""
    with first_layers_forced(policy) if static else contextlib.nullcontext():
        pred = policy.predict_action_chunk(obs, budget, noise)
    if static and not bool(pred.active_mask[0, : pred.active_mask.sum()].all()):
        raise RuntimeError("the forced router did not keep the first layers")
    t = pred.timings
    return {
        "total": t["total"],
        "vision": t["vision"],
        "vlm": t["llm"],
        "expert": t["expert"],
        "other": max(0.0, t["total"] - t["vision"] - t["llm"] - t["expert"]),
    }


# -- statistics -------------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of a non-empty list."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarise(samples: list[Sample]) -> dict[str, Any]:
    totals = [s["total"] for s in samples]
    return {
        "n": len(samples),
        "median_s": statistics.median(totals),
        "p10_s": percentile(totals, 0.1),
        "p90_s": percentile(totals, 0.9),
        "stages_median_s": {k: statistics.median(s.get(k, 0.0) for s in samples) for k in (*STAGES, "other")},
        "samples_s": totals,
    }


def ratio(samples: dict[str, list[Sample]], ours: str, peer: str) -> dict[str, float]:
    """ours/peer as a ratio of medians and as the median of per-round ratios (round i of ours over round i of peer)."""
    a, b = [s["total"] for s in samples[ours]], [s["total"] for s in samples[peer]]
    if len(a) != len(b) or not a:
        raise ValueError(f"{ours} and {peer} need the same non-zero number of rounds ({len(a)} vs {len(b)})")
    paired = [x / y for x, y in zip(a, b, strict=True)]
    return {
        "of_medians": statistics.median(a) / statistics.median(b),
        "paired_median": statistics.median(paired),
        "paired_min": min(paired),
        "paired_max": max(paired),
    }


def rotated(names: list[str], round_index: int) -> list[str]:
    """Round r starts at variant r (mod n): no variant is always first (cold caches) or always after another."""
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def run_rounds(variants: dict[str, Callable[[], Sample]], rounds: int, log: Callable[[str], None]) -> dict:
    samples: dict[str, list[Sample]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in rotated(names, r):
            samples[name].append(variants[name]())
            log(f"round {r + 1}/{rounds} {name}: {samples[name][-1]['total']:.2f} s")
    return samples


# -- report -----------------------------------------------------------------------------------------------------
def build_report(samples: dict[str, list[Sample]], meta: dict[str, Any], sizes: list[int]) -> dict[str, Any]:
    """Summaries, ratios against the peer and the brief's targets; `sizes[0]` is the peer's image size."""
    report = dict(meta)
    report["batch"] = 1
    report["instruction"] = INSTRUCTION
    report["image_note"] = "both sides get the same {0}x{0} camera image".format(sizes[0]) + (
        f"; ours@{sizes[1]} resizes it to our preset's default input size" if len(sizes) > 1 else ""
    )
    report["variants"] = {name: summarise(s) for name, s in samples.items()}
    ratios = {}
    for size in sizes:
        suffix = "" if size == sizes[0] else f"_at{size}"
        for budget in BUDGETS:
            ratios[f"ours_{round(budget * 100)}_vs_lerobot_16{suffix}"] = ratio(
                samples, f"ours-{round(budget * 100)}%@{size}", "lerobot-16L"
            )
        ratios[f"ours_50_vs_lerobot_8{suffix}"] = ratio(samples, f"ours-50%@{size}", "lerobot-8L")
    ratios["ours_static8_vs_lerobot_8"] = ratio(samples, f"ours-static8@{sizes[0]}", "lerobot-8L")
    report["ratios"] = ratios
    report["targets"] = {
        k: {"max_ratio": v, "paired_median": ratios[k]["paired_median"], "met": ratios[k]["paired_median"] <= v}
        for k, v in TARGETS.items()
    }
    gflops = meta.get("ours", {}).get("analytic_gflops", {})
    report["share_of_peak_fp32"] = {
        n: g / report["variants"][n]["median_s"] / PEAK_GFLOPS for n, g in gflops.items() if n in report["variants"]
    }
    return report


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_at_start": load}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["variants"])
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(names)) + 3.5, 4.8))
    bottom = [0.0] * len(names)
    for stage in (*STAGES, "other"):
        values = [report["variants"][n]["stages_median_s"][stage] for n in names]
        ax.bar(names, values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    top = 0.0
    for x, n in enumerate(names):
        v = report["variants"][n]
        ax.errorbar(
            x, v["median_s"], yerr=[[v["median_s"] - v["p10_s"]], [v["p90_s"] - v["median_s"]]], color="k", capsize=3
        )
        ax.text(x, max(bottom[x], v["p90_s"]), f"{v['median_s']:.2f}s", ha="center", va="bottom", fontsize=8)
        top = max(top, bottom[x], v["p90_s"])
    ax.set_ylim(0, top * 1.12)
    lines = ["ours / peer (median of per-round ratios)"]
    for k, r in report["ratios"].items():
        target = report["targets"].get(k)
        note = f"  target <= {target['max_ratio']}: {'met' if target['met'] else 'NOT met'}" if target else ""
        lines.append(f"{k}: {r['paired_median']:.2f}x{note}")
    fig.text(0.635, 0.5, "\n".join(lines), ha="left", va="center", fontsize=7, family="monospace")
    ax.set_ylabel("seconds per 50-action chunk (median, p10-p90)")
    ax.set_title(
        f"LeRobot SmolVLA vs MoLe, CPU {report['threads']} threads, batch 1, {report['rounds']} rounds"
        + (" (PRELIMINARY: loaded machine)" if report["preliminary"] else ""),
        fontsize=9,
    )
    ax.legend(loc="upper right", fontsize=8, ncol=4)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.62, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--out", type=Path, default=RESULTS / "compare_lerobot.json")
    parser.add_argument("--preliminary", action="store_true", help="mark the results as taken on a busy machine")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be >= 1")

    import torch

    from mole_vla_ros.policy import MoLeConfig, MoLePolicy
    from mole_vla_ros.policy.flops import chunk_flops
    from mole_vla_ros.policy.testing import fixed_noise

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    info = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    worker_log = RESULTS / "tmp" / "compare_lerobot.worker.log"  # git-ignored: LeRobot's and transformers' chatter
    worker_log.parent.mkdir(parents=True, exist_ok=True)
    log(f"starting the LeRobot worker (log: {worker_log})")
    with worker_log.open("w") as wlog:
        peer = PeerWorker(args.threads, IMAGE_SIZE, PEER_LAYERS, wlog)
        try:
            default_size = MoLeConfig.preset("smolvlm2-500m").input_size
            sizes = [IMAGE_SIZE] + ([default_size] if default_size != IMAGE_SIZE else [])
            policies = {s: MoLePolicy(MoLeConfig.preset("smolvlm2-500m", input_size=s)).eval() for s in sizes}
            obs = our_batch(IMAGE_SIZE)  # one 512x512 camera for every variant; ours@384 resizes it itself
            noise = fixed_noise(policies[IMAGE_SIZE], 1)
            variants: dict[str, Callable[[], Sample]] = {
                f"lerobot-{n}L": (lambda n=n: peer.sample(n)) for n in PEER_LAYERS
            }
            ours: dict[str, tuple[int, float, bool]] = {}
            for size in sizes:
                for budget in BUDGETS:
                    ours[f"ours-{round(budget * 100)}%@{size}"] = (size, budget, False)
            ours[f"ours-static8@{IMAGE_SIZE}"] = (IMAGE_SIZE, 0.5, True)
            for name, (size, budget, static) in ours.items():
                variants[name] = lambda s=size, b=budget, st=static: our_sample(policies[s], b, obs, noise, st)
                variants[name]()  # warm-up (the worker warmed its own up before saying ready)
            log(f"variants: {list(variants)}; {args.rounds} rounds")
            samples = run_rounds(variants, args.rounds, log)
        finally:
            peer.close()

    meta = {
        "preliminary": args.preliminary,
        "command": "scripts/run_in_env.sh python bench/compare_lerobot.py " + " ".join(argv or sys.argv[1:]),
        "machine": info,
        "threads": args.threads,
        "rounds": args.rounds,
        "peer": {**peer.header["env"], "variants": peer.header["variants"]},
        "ours": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "default_input_size": default_size,
            "input_sizes": sizes,
            "language_tokens": 48,
            "skip_mode": policies[IMAGE_SIZE].config.skip_mode,
            "dtype": policies[IMAGE_SIZE].config.dtype,
            "image_tokens": {str(s): p.config.tokens_per_image for s, p in policies.items()},
            "analytic_gflops": {n: chunk_flops(policies[s].config, b)["total"] / 1e9 for n, (s, b, _) in ours.items()},
        },
    }
    meta["machine"]["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = build_report(samples, meta, sizes)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out.with_suffix(".png"))

    for name, v in report["variants"].items():
        st = v["stages_median_s"]
        log(
            f"{name:>18}: {v['median_s']:6.2f} s (p10 {v['p10_s']:.2f}, p90 {v['p90_s']:.2f}) = vision "
            f"{st['vision']:.2f} + vlm {st['vlm']:.2f} + expert {st['expert']:.2f} + other {st['other']:.2f}"
        )
    for name, r in report["ratios"].items():
        target = (
            f"  target <= {TARGETS[name]}: {'MET' if r['paired_median'] <= TARGETS[name] else 'NOT MET'}"
            if name in TARGETS
            else ""
        )
        log(f"{name}: {r['paired_median']:.3f} (of medians {r['of_medians']:.3f}){target}")
    log(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
