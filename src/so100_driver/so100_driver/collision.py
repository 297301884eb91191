"""Collision geometry of the SO-100 / SO-101 in MuJoCo: contacts per link pair, and the SRDF's disabled pairs.

The model is the generated robot MJCF (`description.generate_mjcf`, the same boxes as the URDF), with MuJoCo's
own contact filtering switched off (every geom has contype = conaffinity = 0) and one explicit `<pair>` per geom
pair we want to know about: parent/child filtering, weld filtering and the robot MJCF's `<exclude>`s would
otherwise hide exactly the contacts a collision check is for.

`compute_disabled_pairs` does what MoveIt's Setup Assistant does, on our model: sample random configurations
inside the joint limits and disable a link pair only when the model says so: adjacent in the kinematic tree,
in contact in every sample ("Always"), or in none ("Never"). Nothing is guessed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from so100_driver.description import generate_mjcf, links_for
from so100_driver.joints import joints_for

# The rigid robot links that carry collision geometry, base first (the URDF's link names).
LinkPair = tuple[str, str]


@dataclass(frozen=True)
class Obstacle:
    """A box fixed in the arm's base_link frame (z up, table top at z = 0): half sizes and centre, m."""

    name: str
    half: tuple[float, float, float]
    pos: tuple[float, float, float]

    def __post_init__(self) -> None:
        if not self.name or any(not np.isfinite(v) for v in (*self.half, *self.pos)) or min(self.half) <= 0:
            raise ValueError(f"obstacle {self.name!r} needs a name, positive half sizes and a finite centre")


# The sim scene's table (so100_driver/sim/scene.py; a test checks that they agree): top face at z = 0.
TABLE = Obstacle("table", (0.45, 0.45, 0.02), (0.2, 0.0, -0.02))
# Links that rest on the table by design: their contact with it is the mount, not a collision.
MOUNTED_LINKS = frozenset({"base_link"})


@dataclass(frozen=True)
class DisabledPair:
    link1: str
    link2: str
    reason: str  # "Adjacent" | "Always" | "Never" (MoveIt Setup Assistant's vocabulary)


@dataclass(frozen=True)
class Contact:
    """Two bodies touching or interpenetrating: `depth` (m, >= 0) is how far they overlap."""

    body1: str
    body2: str
    depth: float


def link_names(arm: str = "so100") -> tuple[str, ...]:
    return tuple(link.name for link in links_for(arm))


def adjacent_pairs(arm: str = "so100") -> set[LinkPair]:
    return {_key(link.parent, link.name) for link in links_for(arm) if link.parent is not None}


def all_link_pairs(arm: str = "so100") -> list[LinkPair]:
    return [_key(a, b) for a, b in itertools.combinations(link_names(arm), 2)]


def _key(a: str, b: str) -> LinkPair:
    return (a, b) if a <= b else (b, a)


class CollisionModel:
    """Robot + obstacles; `contacts(q)` lists what touches at joint positions q (rad, joints.py order).

    Args:
        arm: "so100" or "so101".
        self_pairs: link pairs checked against each other (None: every pair of links).
        obstacles: boxes in the base_link frame, checked against every link but MOUNTED_LINKS.
    """

    def __init__(
        self,
        arm: str = "so100",
        self_pairs: Iterable[LinkPair] | None = None,
        obstacles: Sequence[Obstacle] = (TABLE,),
    ) -> None:
        self.arm = arm
        self.joints = joints_for(arm)
        spec = mujoco.MjSpec.from_string(generate_mjcf(arm))
        for exclude in list(spec.excludes):
            spec.delete(exclude)
        links = link_names(arm)
        geoms_of: dict[str, list[str]] = {name: [] for name in links}
        for geom in spec.geoms:
            geom.contype = 0
            geom.conaffinity = 0
            body = geom.parent.name
            geoms_of[body].append(geom.name)
        names = {o.name for o in obstacles}
        if len(names) != len(obstacles) or names & set(links):
            raise ValueError(f"obstacle names must be distinct and not link names: {[o.name for o in obstacles]}")
        for obstacle in obstacles:
            spec.worldbody.add_geom(
                name=obstacle.name,
                type=mujoco.mjtGeom.mjGEOM_BOX,
                size=list(obstacle.half),
                pos=list(obstacle.pos),
                contype=0,
                conaffinity=0,
            )
        pairs = set(all_link_pairs(arm)) if self_pairs is None else {_key(*p) for p in self_pairs}
        unknown = {name for pair in pairs for name in pair} - set(links)
        if unknown:
            raise ValueError(f"unknown links in collision pairs: {sorted(unknown)}; the {arm} has {list(links)}")
        self.self_pairs = frozenset(pairs)
        body_pairs = sorted(pairs) + [
            (link, obstacle.name) for obstacle in obstacles for link in links if link not in MOUNTED_LINKS
        ]
        geoms_of.update({o.name: [o.name] for o in obstacles})
        for a, b in body_pairs:
            for ga, gb in itertools.product(geoms_of[a], geoms_of[b]):
                pair = spec.add_pair()
                pair.geomname1, pair.geomname2 = ga, gb
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        # geom id -> the link (or obstacle) it belongs to; world geoms are obstacles, named after themselves.
        self._owner = [
            self.model.body(self.model.geom_bodyid[g]).name if self.model.geom_bodyid[g] else self.model.geom(g).name
            for g in range(self.model.ngeom)
        ]
        self._links = frozenset(links)
        self._qadr = np.array([self.model.joint(j.name).qposadr[0] for j in self.joints])
        self.lower = np.array([j.lower for j in self.joints])
        self.upper = np.array([j.upper for j in self.joints])

    def contacts(self, positions: np.ndarray | Sequence[float]) -> list[Contact]:
        """Every checked pair in contact at `positions`, deepest first. Raises ValueError on a wrong shape/NaN."""
        q = np.asarray(positions, dtype=float).reshape(-1)
        if q.shape != (len(self.joints),) or not np.all(np.isfinite(q)):
            raise ValueError(f"want {len(self.joints)} finite joint positions, got {positions!r}")
        self.data.qpos[self._qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_collision(self.model, self.data)
        n = self.data.ncon
        if n == 0:
            return []
        geoms = self.data.contact.geom[:n]
        dist = self.data.contact.dist[:n]
        deepest: dict[LinkPair, float] = {}
        for (g1, g2), d in zip(geoms, dist, strict=True):
            key = (self._owner[g1], self._owner[g2])
            if key[0] not in self._links:  # the link first, the obstacle second
                key = (key[1], key[0])
            deepest[key] = max(deepest.get(key, 0.0), -float(d))
        return sorted((Contact(a, b, depth) for (a, b), depth in deepest.items()), key=lambda c: -c.depth)

    def touching_pairs(self, positions: np.ndarray | Sequence[float]) -> set[LinkPair]:
        return {_key(c.body1, c.body2) for c in self.contacts(positions)}

    def random_configurations(self, n: int, seed: int) -> np.ndarray:
        """n configurations uniform inside the joint limits, plus every corner of the limit box first."""
        corners = np.array(list(itertools.product(*zip(self.lower, self.upper, strict=True))))
        rng = np.random.default_rng(seed)
        return np.concatenate([corners, rng.uniform(self.lower, self.upper, size=(n, len(self.joints)))])


def contact_frequencies(arm: str = "so100", samples: int = 20000, seed: int = 0) -> dict[LinkPair, float]:
    """Fraction of random configurations (and limit corners) in which each link pair touches."""
    model = CollisionModel(arm, obstacles=())
    configs = model.random_configurations(samples, seed)
    counts = dict.fromkeys(all_link_pairs(arm), 0)
    for q in configs:
        for pair in model.touching_pairs(q):
            counts[pair] += 1
    return {pair: count / len(configs) for pair, count in counts.items()}


def compute_disabled_pairs(arm: str = "so100", samples: int = 20000, seed: int = 0) -> list[DisabledPair]:
    """The SRDF's disabled collision pairs, computed from the model (see the module docstring)."""
    adjacent = adjacent_pairs(arm)
    out = []
    for (a, b), freq in sorted(contact_frequencies(arm, samples, seed).items()):
        if (a, b) in adjacent:
            out.append(DisabledPair(a, b, "Adjacent"))
        elif freq == 1.0:
            out.append(DisabledPair(a, b, "Always"))
        elif freq == 0.0:
            out.append(DisabledPair(a, b, "Never"))
    return out


def checked_self_pairs(disabled: Iterable[DisabledPair | LinkPair], arm: str = "so100") -> list[LinkPair]:
    """The link pairs a self-collision check must look at: all pairs but the disabled ones."""
    off = {_key(p.link1, p.link2) if isinstance(p, DisabledPair) else _key(*p) for p in disabled}
    return [pair for pair in all_link_pairs(arm) if pair not in off]
