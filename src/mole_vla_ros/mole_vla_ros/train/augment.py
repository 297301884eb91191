"""Colour-swap augmentation: counterfactual instructions for scenes whose named colours are the RGB primaries.

In the sim's demonstrations the arm's first moves towards the named cube barely differ from moves towards another
one, so a small policy learns where cubes usually are long before it learns to read which one is named (issue 7:
the cognition token's future prediction depended on the colour only after ~4,800 steps). Swapping the image's
colour channels and renaming the colours in the instruction to match gives the same scene and the same actions
with a different named colour: the position of the target no longer predicts the word, only the colour does.

A cube coloured by one dominant channel (red, green, blue) keeps a dominant channel after a permutation of the
channels, so it reads as another of the three; grey table and floor stay grey. Only for datasets whose instructions
name colours by these three words and whose scenes use them for these primaries (the sim's cubes); other datasets
keep the default, off.
"""

from __future__ import annotations

import itertools
import re

import torch

PRIMARY_CHANNEL = {"red": 0, "green": 1, "blue": 2}
_NAMES = tuple(PRIMARY_CHANNEL)
_COLOUR_WORD = re.compile(r"\b(red|green|blue)\b", re.IGNORECASE)
# Every reordering of the channels but the identity: new channel c shows old channel permutation[c].
PERMUTATIONS = tuple(p for p in itertools.permutations(range(3)) if p != (0, 1, 2))


def renamed(instruction: str, permutation: tuple[int, int, int]) -> str:
    """The instruction with each primary colour word replaced by the colour that object shows after the swap."""
    # A cube whose dominant channel was d shows it in the channel c with permutation[c] == d.
    new_name = {name: _NAMES[permutation.index(channel)] for name, channel in PRIMARY_CHANNEL.items()}
    return _COLOUR_WORD.sub(lambda m: new_name[m.group(1).lower()], instruction)


def swap_colours(batch: dict[str, object], probability: float, generator: torch.Generator) -> dict[str, object]:
    """A copy of the training `batch` where each sample naming a primary colour is, with `probability`, shown with
    its images' RGB channels permuted (every camera alike) and its instruction renamed to match. Actions, states and
    samples that name no colour are unchanged."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"colour swap probability must be in [0, 1], got {probability}")
    instructions = list(batch["instruction"])  # type: ignore[arg-type]
    images = [image.clone() for image in batch["images"]]  # type: ignore[union-attr]
    draws = torch.rand(len(instructions), generator=generator)
    choices = torch.randint(len(PERMUTATIONS), (len(instructions),), generator=generator)
    for i, text in enumerate(instructions):
        if draws[i] >= probability or not _COLOUR_WORD.search(text):
            continue
        permutation = PERMUTATIONS[int(choices[i])]
        for image in images:  # (B, 3, H, W)
            image[i] = image[i, list(permutation)]
        instructions[i] = renamed(text, permutation)
    return {**batch, "images": images, "instruction": instructions}
