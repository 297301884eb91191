"""`mole-vla dataset-viz`: one episode of a LeRobot dataset -> an MP4 (camera views, joint trajectories under them
with a cursor at the current frame) and a PNG summary (per-joint state and action, a few frames), to check a
recording before training on it.

    mole-vla dataset-viz DATASET --episode 0 --out viz/   # viz/episode_000.mp4, viz/episode_000.png
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from mole_vla_ros.data.lerobot_dataset import DatasetError, LeRobotDatasetReader
from so100_driver.joints import JOINT_NAMES

PLOT_HEIGHT = 240  # px, the trajectory strip under the camera views


def episode_rows(ds: LeRobotDatasetReader, episode: int) -> np.ndarray:
    if episode not in ds.episodes:
        raise DatasetError(f"{ds.root}: no episode {episode}; it has {sorted(ds.episodes)}")
    row = ds.episodes[episode]
    return np.arange(int(row["dataset_from_index"]), int(row["dataset_to_index"]))


def _even(n: int) -> int:
    return n + (n % 2)  # yuv420p wants even sizes


def camera_strip(ds: LeRobotDatasetReader, rows: np.ndarray, height: int) -> np.ndarray:
    """(T, height, W, 3): the cameras side by side, each scaled to `height`."""
    views = []
    for camera in ds.cameras:
        frames = ds.frames(camera)[rows]
        h, w = frames.shape[1:3]
        width = max(2, round(w * height / h))
        views.append(np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames]))
    return np.concatenate(views, axis=2)


def trajectory_plot(state: np.ndarray, action: np.ndarray, fps: int, size: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    """The joint trajectories as an RGB image of `size` (h, w), and the plot's x pixel range (x0, x1)."""
    h, w = size
    fig, ax = plt.subplots(figsize=(w / 100, h / 100), dpi=100)
    t = np.arange(len(state)) / fps
    colours = plt.cm.tab10(np.arange(state.shape[1]))
    for j, name in enumerate(JOINT_NAMES[: state.shape[1]]):
        ax.plot(t, state[:, j], color=colours[j], lw=1.2, label=name)
        ax.plot(t, action[:, j], color=colours[j], lw=0.8, ls="--")
    ax.set_xlim(0, max(t[-1], 1.0 / fps))
    ax.set_xlabel("s (solid: state, dashed: action)")
    ax.set_ylabel("rad")
    ax.legend(fontsize=6, ncol=6, loc="upper center", frameon=False)
    fig.tight_layout(pad=0.3)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    x0, x1 = (ax.transData.transform([[0, 0], [max(t[-1], 1.0 / fps), 0]])[:, 0]).round().astype(int)
    plt.close(fig)
    return cv2.resize(image, (w, h)), (int(x0), int(x1))


def write_mp4(ds: LeRobotDatasetReader, episode: int, path: Path, camera_height: int = 240) -> int:
    """The episode's video with the trajectory strip; returns the number of frames written."""
    rows = episode_rows(ds, episode)
    views = camera_strip(ds, rows, camera_height)
    width = _even(views.shape[2])
    plot, (x0, x1) = trajectory_plot(ds.state[rows], ds.action[rows], ds.fps, (PLOT_HEIGHT, width))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=ds.fps)
        stream.width, stream.height = width, _even(camera_height + PLOT_HEIGHT)
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, ds.fps)
        canvas = np.full((stream.height, width, 3), 255, np.uint8)
        for k in range(len(rows)):
            canvas[:camera_height, : views.shape[2]] = views[k]
            canvas[camera_height : camera_height + PLOT_HEIGHT] = plot
            x = x0 + round((x1 - x0) * k / max(len(rows) - 1, 1))
            canvas[camera_height : camera_height + PLOT_HEIGHT, max(x - 1, 0) : x + 1] = (220, 0, 0)
            frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
            frame.pts = k
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return len(rows)


def write_summary(ds: LeRobotDatasetReader, episode: int, path: Path, thumbnails: int = 4) -> None:
    """PNG: the first camera at a few moments, then one panel per joint (state and action)."""
    rows = episode_rows(ds, episode)
    n = ds.state.shape[1]
    fig = plt.figure(figsize=(12, 3 + 1.6 * n))
    grid = fig.add_gridspec(1 + n, thumbnails, height_ratios=[2.2] + [1] * n)
    if ds.cameras:
        frames = ds.frames(ds.cameras[0])
        for i, k in enumerate(np.linspace(0, len(rows) - 1, thumbnails).round().astype(int)):
            ax = fig.add_subplot(grid[0, i])
            ax.imshow(frames[rows[k]])
            ax.set_title(f"{ds.cameras[0]} t={k / ds.fps:.2f} s", fontsize=8)
            ax.axis("off")
    t = np.arange(len(rows)) / ds.fps
    for j in range(n):
        ax = fig.add_subplot(grid[1 + j, :])
        ax.plot(t, ds.state[rows, j], label="state")
        ax.plot(t, ds.action[rows, j], "--", label="action")
        ax.set_ylabel(f"{JOINT_NAMES[j]}\nrad", fontsize=8)
        if j == 0:
            ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel("s")
    fig.suptitle(f"{ds.root.name} episode {episode}: {len(rows)} frames at {ds.fps} fps, '{ds.task_of(rows[0])}'")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mole-vla dataset-viz", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="LeRobot v3.0 dataset folder")
    parser.add_argument("--episode", type=int, default=0, help="episode index")
    parser.add_argument("--out", type=Path, default=Path("."), help="output folder")
    parser.add_argument("--units", choices=("rad", "deg", "range_m100_100"), help="when info.json does not say")
    args = parser.parse_args(argv)
    try:
        ds = LeRobotDatasetReader(args.dataset, units=args.units)
        mp4 = args.out / f"episode_{args.episode:03d}.mp4"
        png = args.out / f"episode_{args.episode:03d}.png"
        frames = write_mp4(ds, args.episode, mp4)
        write_summary(ds, args.episode, png)
    except DatasetError as exc:
        print(f"mole-vla dataset-viz: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"mp4": str(mp4), "png": str(png), "frames": frames}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
