"""MuJoCo collision model of the arm: the SRDF's disabled pairs are what the model says, the table is the scene's."""

import itertools

import mujoco
import numpy as np
import pytest

from so100_driver import collision, srdf
from so100_driver.collision import TABLE, CollisionModel, Obstacle, compute_disabled_pairs
from so100_driver.description import MODELS_DIR, forward_kinematics
from so100_driver.moveit_config import MOVEIT_DIR
from so100_driver.srdf import NAMED_ARM_STATES, parse_disabled_pairs

ARMS = ("so100", "so101")


def _srdf_pairs(arm):
    return parse_disabled_pairs((MOVEIT_DIR / arm / f"{arm}.srdf").read_text())


@pytest.mark.parametrize("arm", ARMS)
def test_disabled_never_pairs_never_touch_over_fresh_random_configurations(arm):
    # A different seed and more samples than the generator used: a pair that can touch would show up here.
    never = [(p.link1, p.link2) for p in _srdf_pairs(arm) if p.reason == "Never"]
    assert never, "the model has link pairs that cannot meet; none were found"
    model = CollisionModel(arm, self_pairs=never, obstacles=())
    for q in model.random_configurations(30000, seed=12345):
        assert not model.touching_pairs(q), f"{model.touching_pairs(q)} touch at {q.tolist()}"


@pytest.mark.parametrize("arm", ARMS)
def test_every_disabled_pair_has_the_reason_the_model_gives(arm):
    pairs = _srdf_pairs(arm)
    adjacent = collision.adjacent_pairs(arm)
    freq = collision.contact_frequencies(arm, srdf.COLLISION_SAMPLES, srdf.COLLISION_SEED)
    for p in pairs:
        key = (p.link1, p.link2)
        assert p.reason in ("Adjacent", "Always", "Never")
        if p.reason == "Adjacent":
            assert key in adjacent
        elif p.reason == "Always":
            assert freq[key] == 1.0
    # Every adjacent pair is disabled, and the enabled pairs are ones the arm can really run into.
    disabled = {(p.link1, p.link2) for p in pairs}
    assert adjacent <= disabled
    enabled = set(collision.all_link_pairs(arm)) - disabled
    assert enabled and all(freq[pair] > 0 for pair in enabled), {pair: freq[pair] for pair in enabled}
    assert len(disabled) + len(enabled) == len(list(itertools.combinations(collision.link_names(arm), 2)))


def test_disabled_pairs_are_computed_not_fixed():
    # Fewer samples see fewer contacts: rare pairs drop into "Never". The result depends on the model's sampling.
    dense = {(p.link1, p.link2): p.reason for p in compute_disabled_pairs("so100", samples=4000, seed=0)}
    sparse = {(p.link1, p.link2): p.reason for p in compute_disabled_pairs("so100", samples=20, seed=0)}
    assert set(dense) < set(sparse)


@pytest.mark.parametrize("arm", ARMS)
def test_table_matches_the_sim_scene(arm):
    model = mujoco.MjModel.from_xml_path(str(MODELS_DIR / f"scene_{arm}.xml"))
    table = model.geom("table")
    assert table.size.tolist() == pytest.approx(TABLE.half)
    assert table.pos.tolist() == pytest.approx(TABLE.pos)


def test_contacts_name_the_links_and_the_obstacle_link_first():
    reach = np.array([0.0, 1.2, -0.3, 0.3, 0.0, 0.0])
    tip = forward_kinematics(reach)["gripper_tip"][:3, 3]
    box = Obstacle("box", (0.02, 0.02, 0.02), tuple(tip))  # a known obstacle where that pose puts the jaws
    model = CollisionModel("so100", self_pairs=[], obstacles=(TABLE, box))
    down = np.array([0.0, 0.6, 0.3, 0.7, 0.0, 0.6])  # gripper pushed 5 cm into the table
    hits = model.contacts(down)
    assert hits and hits[0].body2 == "table" and hits[0].body1 in ("gripper_link", "jaw_link")
    assert hits[0].depth > 0.03
    assert model.contacts(np.zeros(6)) == []
    assert "box" in {c.body2 for c in model.contacts(reach)}
    with pytest.raises(ValueError, match="finite"):
        model.contacts([0.0, np.nan, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="unknown links"):
        CollisionModel("so100", self_pairs=[("base_link", "elbow")])
    with pytest.raises(ValueError, match="positive half"):
        Obstacle("bad", (0.0, 0.1, 0.1), (0, 0, 0))


@pytest.mark.parametrize("arm", ARMS)
def test_named_states_are_collision_free_and_ready_is_over_the_table(arm):
    srdf = {(p.link1, p.link2) for p in _srdf_pairs(arm)}
    model = CollisionModel(arm, self_pairs=set(collision.all_link_pairs(arm)) - srdf)
    for name, q in NAMED_ARM_STATES.items():
        full = np.array([*q, 0.0])
        assert all(c.depth < 1e-3 for c in model.contacts(full)), name
    tip = forward_kinematics(np.array([*NAMED_ARM_STATES["ready"], 0.0]), arm)["gripper_tip"][:3, 3]
    assert 0.05 < tip[2] < 0.15 and tip[0] > 0.1
