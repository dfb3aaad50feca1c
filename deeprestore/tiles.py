"""Tiles for images too large to restore whole: overlapping boxes and a seamless blend.

:func:`plan_tiles` cuts each side of an H×W image into ⌈side / tile⌉ boxes that overlap their
neighbours by ``overlap`` pixels (each box about ``tile`` + ``overlap`` px long, starts spread
evenly so the last box ends at the border); :class:`Blender` accumulates each box's restored
image weighted by a window that is 1 inside the box and falls to 0 along a raised-cosine ramp
across every side that overlaps a neighbour (not along the image border), then divides by the
summed weights. Where two boxes
overlap their weights sum to a smooth partition, so no seam shows. Boxes may be scaled (``scale``:
the super-resolution factor, when boxes are planned on the low-resolution input). Nothing here
knows about networks or tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Box:
    """A tile: ``top``, ``left``, ``height``, ``width`` in pixels of the image it cuts."""

    top: int
    left: int
    height: int
    width: int

    def scaled(self, factor: int) -> Box:
        """The same box in an image ``factor`` times larger."""
        return Box(self.top * factor, self.left * factor, self.height * factor,
                   self.width * factor)


def default_overlap(tile: int) -> int:
    """The overlap used with ``--tile SIZE``: an eighth of the tile, at least 16 px."""
    return max(16, tile // 8)


def split(length: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Starts and the common length of the boxes along one side: ⌈length / tile⌉ boxes of
    ⌈(length + (n − 1)·overlap) / n⌉ px (at most ``tile + overlap``), the first at 0, the last
    ending at ``length``; neighbours overlap by at least ``overlap`` px."""
    if length <= tile:
        return [0], length
    count = math.ceil(length / tile)
    size = min(length, math.ceil((length + (count - 1) * overlap) / count))
    return [round(i * (length - size) / (count - 1)) for i in range(count)], size


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Box]:
    """Boxes (row by row) covering ``height``×``width``: :func:`split` along each side
    (``tile`` ≥ 1, ``0 ≤ overlap < tile``)."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need 0 ≤ overlap < tile, got tile {tile}, overlap {overlap}")
    (rows, box_height), (cols, box_width) = split(height, tile, overlap), split(width, tile,
                                                                                 overlap)
    return [Box(top, left, box_height, box_width) for top in rows for left in cols]


def _ramp(length: int, ramp_in: int, ramp_out: int) -> torch.Tensor:
    """1-D window: sin² rise over the first ``ramp_in`` samples, fall over the last
    ``ramp_out``, 1 between (float64)."""
    window = torch.ones(length, dtype=torch.float64)
    for ramp, flip in ((ramp_in, False), (ramp_out, True)):
        if ramp > 0:
            positions = (torch.arange(ramp, dtype=torch.float64) + 0.5) / ramp
            rise = torch.sin(0.5 * math.pi * positions) ** 2
            if flip:
                window[length - ramp:] *= rise.flip(0)
            else:
                window[:ramp] *= rise
    return window


class Blender:
    """Accumulates restored boxes of a (1, C, H, W) image and returns their blend.

    ``boxes``: the plan, in the coordinates of the output image; the ramp on a side is the
    overlap with the neighbouring box there (0 on the image border).
    """

    def __init__(self, boxes: list[Box], channels: int, height: int, width: int) -> None:
        self.boxes = boxes
        self._sum = torch.zeros(1, channels, height, width, dtype=torch.float64)
        self._weight = torch.zeros(1, 1, height, width, dtype=torch.float64)

    def _overlaps(self, box: Box) -> tuple[int, int, int, int]:
        """Overlap (px) with the neighbours above, below, left and right of ``box``."""
        up = down = left = right = 0
        for other in self.boxes:
            if other == box:
                continue
            same_cols = other.left < box.left + box.width and box.left < other.left + other.width
            same_rows = other.top < box.top + box.height and box.top < other.top + other.height
            if same_cols and other.top < box.top < other.top + other.height:
                up = max(up, other.top + other.height - box.top)
            if same_cols and other.top > box.top and other.top < box.top + box.height:
                down = max(down, box.top + box.height - other.top)
            if same_rows and other.left < box.left < other.left + other.width:
                left = max(left, other.left + other.width - box.left)
            if same_rows and other.left > box.left and other.left < box.left + box.width:
                right = max(right, box.left + box.width - other.left)
        return up, down, left, right

    def window(self, box: Box) -> torch.Tensor:
        """The weight (1, 1, h, w) of ``box`` (float64)."""
        up, down, left, right = self._overlaps(box)
        rows = _ramp(box.height, up, down)
        cols = _ramp(box.width, left, right)
        return (rows[:, None] * cols[None, :])[None, None]

    def add(self, box: Box, image: torch.Tensor) -> None:
        """Add the restored ``image`` (1, C, box.height, box.width) of ``box``."""
        weight = self.window(box)
        rows = slice(box.top, box.top + box.height)
        cols = slice(box.left, box.left + box.width)
        self._sum[..., rows, cols] += weight * image.to(torch.float64).cpu()
        self._weight[..., rows, cols] += weight

    def result(self) -> torch.Tensor:
        """The blended image (1, C, H, W), float32; every pixel must have been covered."""
        if bool((self._weight <= 0).any()):
            raise ValueError("some pixels are in no tile")
        return (self._sum / self._weight).float()
