"""Colour-swap augmentation: the swapped image shows the renamed colour where the named object is; the rest stays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mole_vla_ros.train.augment import PERMUTATIONS, renamed, swap_colours
from so100_driver.sim.scene import CUBE_COLORS


def _scene(size: int = 12) -> torch.Tensor:
    """(3, size, size) in [0, 1]: a grey table with the sim's three cubes side by side, red, green, blue."""
    image = torch.full((3, size, size), 0.3)
    for i, rgba in enumerate(CUBE_COLORS.values()):
        image[:, 4:8, 4 * i : 4 * i + 4] = torch.tensor(rgba[:3])[:, None, None]
    return image


def _colour_at(image: torch.Tensor, column: int) -> str:
    """The sim cube colour nearest to the pixel colour at (5, column)."""
    pixel = image[:, 5, column].numpy()
    return min(CUBE_COLORS, key=lambda name: np.abs(np.array(CUBE_COLORS[name][:3]) - pixel).sum())


@pytest.mark.parametrize("permutation", PERMUTATIONS)
def test_each_swap_renames_the_colour_of_the_object_the_instruction_names(permutation):
    image = _scene()[:, :, :][None]
    swapped = image[0, list(permutation)]
    for column, original in zip((1, 5, 9), CUBE_COLORS, strict=True):
        # The object that was `original` now looks like the colour its name becomes.
        assert _colour_at(swapped, column) == renamed(original, permutation)
    # Grey stays grey: the table and floor are unchanged.
    assert torch.equal(swapped[:, 0, 0], image[0, :, 0, 0])
    assert {renamed(c, permutation) for c in CUBE_COLORS} == set(CUBE_COLORS)  # a relabelling, never two alike


def test_instructions_are_renamed_word_by_word_and_other_text_is_kept():
    swap_red_blue = (2, 1, 0)
    assert renamed("pick up the red cube", swap_red_blue) == "pick up the blue cube"
    assert renamed("put the Blue cube on the red one", swap_red_blue) == "put the red cube on the blue one"
    assert renamed("pick up the green cube", swap_red_blue) == "pick up the green cube"
    assert renamed("bored reddish sprite", swap_red_blue) == "bored reddish sprite"  # whole words only


def _batch(n: int = 64) -> dict[str, object]:
    scene = _scene()
    return {
        "images": [scene.expand(n, -1, -1, -1).clone(), scene.flip(-1).expand(n, -1, -1, -1).clone()],
        "instruction": ["pick up the red cube"] * (n - 1) + ["wave at the camera"],
        "state": torch.randn(n, 6),
        "action": torch.randn(n, 16, 6),
    }


def test_swap_colours_changes_about_the_given_share_consistently_across_cameras_and_leaves_actions():
    batch = _batch()
    out = swap_colours(batch, 0.5, torch.Generator().manual_seed(0))
    assert out["action"] is batch["action"] and out["state"] is batch["state"]
    assert torch.equal(batch["images"][0][0], _scene())  # the input batch is not modified
    changed = [i for i, text in enumerate(out["instruction"]) if text != "pick up the red cube"]
    assert 16 <= len(changed) <= 48  # ~half of 63
    assert out["instruction"][-1] == "wave at the camera"  # names no colour: never swapped
    for i in range(len(out["instruction"])):
        name = out["instruction"][i].split()[3] if i < 63 else None
        for camera, column in zip(out["images"], (1, 10), strict=True):  # the red cube, in either camera's layout
            if name is not None:
                assert _colour_at(camera[i], column) == name
    for camera in (0, 1):
        assert torch.equal(out["images"][camera][-1], batch["images"][camera][-1])


def test_swap_colours_is_reproducible_and_off_at_zero():
    batch = _batch()
    first = swap_colours(batch, 0.5, torch.Generator().manual_seed(3))
    again = swap_colours(batch, 0.5, torch.Generator().manual_seed(3))
    assert first["instruction"] == again["instruction"]
    assert all(torch.equal(a, b) for a, b in zip(first["images"], again["images"], strict=True))
    off = swap_colours(batch, 0.0, torch.Generator().manual_seed(3))
    assert off["instruction"] == batch["instruction"]
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        swap_colours(batch, 1.5, torch.Generator())
