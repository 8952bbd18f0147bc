# SPDX-License-Identifier: Apache-2.0
"""Class schemes of the semseg task and the Cityscapes labelIds that feed them.

Real datasets (Cityscapes, KITTI semantics, anything in a manifest) store *Cityscapes labelIds*
(0-33, cityscapesScripts ``labels.py``). A model is trained on one *scheme*:

* ``categories``: the 7 Cityscapes categories of SPEC §2 (``SEMSEG_CLASSES``, the shipped model);
* ``cityscapes19``: the standard 19 Cityscapes training classes (trainIds 0-18).

A scheme maps every labelId to a class id or ``IGNORE_INDEX`` (void, unlabelled, license plate,
ego vehicle, ...), and carries the class names and display colours, so readers, writers, the
trainer and the evaluation all agree from this one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from ..model.config import IGNORE_INDEX, SEMSEG_CLASSES
from ..postprocess import PALETTE

#: Cityscapes labelIds of each of the 7 categories (cityscapesScripts ``labels.py``, ``category``).
CATEGORY_LABEL_IDS: MappingProxyType[str, tuple[int, ...]] = MappingProxyType({
    "flat": (7, 8, 9, 10),                        # road, sidewalk, parking, rail track
    # building, wall, fence, guard rail, bridge, tunnel
    "construction": (11, 12, 13, 14, 15, 16),
    "object": (17, 18, 19, 20),                   # pole, polegroup, traffic light, traffic sign
    "nature": (21, 22),                           # vegetation, terrain
    "sky": (23,),
    "human": (24, 25),                            # person, rider
    "vehicle": (26, 27, 28, 29, 30, 31, 32, 33),  # car ... bicycle (caravan, trailer included)
})

#: The 19 Cityscapes training classes: (name, labelId, RGB colour), in trainId order.
CITYSCAPES19: tuple[tuple[str, int, tuple[int, int, int]], ...] = (
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)),
    ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
)

#: The labelId the writers store for each category (its representative class: road, person, car,
#: building, pole, vegetation, sky; the same classes whose colours ``PALETTE`` uses). Each is also
#: a cityscapes19 class, so an exported synthetic set reads back under both schemes.
CATEGORY_WRITE_LABEL_ID: MappingProxyType[str, int] = MappingProxyType({
    "flat": 7, "human": 24, "vehicle": 26, "construction": 11, "object": 17, "nature": 21,
    "sky": 23,
})
#: labelId written for pixels without a class ("unlabeled").
VOID_LABEL_ID = 0
#: Number of entries of a labelId lookup table (labelIds are stored as uint8).
_LUT_SIZE = 256


@dataclass(frozen=True)
class ClassScheme:
    """One way to split the world into classes: names, colours, and the labelId -> class map."""

    name: str
    class_names: tuple[str, ...]
    #: (num_classes, 3) uint8 RGB
    palette: np.ndarray
    #: (256,) uint8: labelId -> class id, ``IGNORE_INDEX`` for labelIds outside the scheme
    label_id_lut: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def from_label_ids(self, label_ids: np.ndarray) -> np.ndarray:
        """Map a uint8 labelId image to this scheme's class ids (``IGNORE_INDEX`` = void)."""
        if label_ids.dtype != np.uint8:
            raise ValueError(f"labelIds must be uint8, got {label_ids.dtype}")
        return self.label_id_lut[label_ids]


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _categories() -> ClassScheme:
    lut = np.full(_LUT_SIZE, IGNORE_INDEX, np.uint8)
    for cls, name in enumerate(SEMSEG_CLASSES):
        lut[list(CATEGORY_LABEL_IDS[name])] = cls
    return ClassScheme("categories", SEMSEG_CLASSES, _frozen(PALETTE[:len(SEMSEG_CLASSES)].copy()),
                       _frozen(lut))


def _cityscapes19() -> ClassScheme:
    lut = np.full(_LUT_SIZE, IGNORE_INDEX, np.uint8)
    for train_id, (_, label_id, _) in enumerate(CITYSCAPES19):
        lut[label_id] = train_id
    return ClassScheme("cityscapes19", tuple(n for n, _, _ in CITYSCAPES19),
                       _frozen(np.array([c for _, _, c in CITYSCAPES19], np.uint8)), _frozen(lut))


#: Every scheme by name (``edgemoe-train --classes``, ``edgemoe-eval``).
SCHEMES: MappingProxyType[str, ClassScheme] = MappingProxyType(
    {s.name: s for s in (_categories(), _cityscapes19())})


def get_scheme(name: str) -> ClassScheme:
    """The scheme called ``name``; ValueError naming the known ones otherwise."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown class scheme {name!r}; known: {', '.join(SCHEMES)}") from None


def scheme_for_classes(class_names: tuple[str, ...] | list[str]) -> ClassScheme:
    """The scheme whose class list is exactly ``class_names`` (a model config's), else
    ValueError."""
    for scheme in SCHEMES.values():
        if tuple(class_names) == scheme.class_names:
            return scheme
    raise ValueError(f"model classes {tuple(class_names)} match no known class scheme "
                     f"({', '.join(SCHEMES)})")


def categories_to_label_ids(categories: np.ndarray) -> np.ndarray:
    """Category ids (``SEMSEG_CLASSES`` order, anything else = void) -> representative labelIds
    (uint8), the inverse the writers use to store our rendered labels as Cityscapes labelIds."""

    lut = np.full(_LUT_SIZE, VOID_LABEL_ID, np.uint8)
    for cls, name in enumerate(SEMSEG_CLASSES):
        lut[cls] = CATEGORY_WRITE_LABEL_ID[name]
    return lut[np.asarray(categories, dtype=np.uint8)]
