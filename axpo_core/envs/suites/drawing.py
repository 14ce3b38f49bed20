"""Pillow drawing helpers shared by the suites: colours, clutter, boxes, fonts and shapes."""

from __future__ import annotations

import math
import random
from functools import lru_cache

from PIL import ImageDraw, ImageFont

from axpo_core.envs.suites.base import Box, Colour


def _blend(a: Colour, b: Colour, t: float) -> Colour:
    """``t`` of ``a`` over ``1 - t`` of ``b``."""
    return tuple(round(t * x + (1 - t) * y) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _muted(rng: random.Random, lo: int = 110, hi: int = 225) -> Colour:
    """A low-saturation grey, so that clutter never looks like one of the named colours."""
    g = rng.randint(lo, hi)
    return tuple(min(255, max(0, g + rng.randint(-12, 12))) for _ in range(3))  # type: ignore[return-value]


def _jitter(c: Colour, rng: random.Random, amount: int = 8) -> Colour:
    return tuple(min(255, max(0, x + rng.randint(-amount, amount))) for x in c)  # type: ignore[return-value]


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: random.Random, w: int, h: int, count: int) -> None:
    """Grey rectangles, ellipses and lines: a busy background that hides nothing in colour."""
    for _ in range(count):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randint(20, 220), y0 + rng.randint(20, 220)
        kind = rng.random()
        if kind < 0.4:
            draw.rectangle((x0, y0, x1, y1), fill=_muted(rng))
        elif kind < 0.75:
            draw.ellipse((x0, y0, x1, y1), fill=_muted(rng))
        else:
            draw.line((x0, y0, rng.randrange(w), rng.randrange(h)), fill=_muted(rng), width=rng.randint(1, 4))


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _grow(box: Box, m: int) -> Box:
    return (box[0] - m, box[1] - m, box[2] + m, box[3] + m)


def _fill(draw: ImageDraw.ImageDraw, box: Box, colour: Colour) -> None:
    draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=colour)


def _to_bbox_1000(box: Box, w: int, h: int) -> list[int]:
    """A pixel box as ``image_zoom_in`` coordinates (0–1000), rounded outwards and clamped."""
    x0, y0, x1, y1 = box
    return [
        max(0, math.floor(x0 * 1000 / w)),
        max(0, math.floor(y0 * 1000 / h)),
        min(1000, math.ceil(x1 * 1000 / w)),
        min(1000, math.ceil(y1 * 1000 / h)),
    ]


def _where(cx: float, cy: float, w: int, h: int) -> str:
    """Where a point lies, in words ("top left", "centre", ...), for the oracle's thinking."""
    row = ("top", "middle", "bottom")[min(2, int(3 * cy / h))]
    col = ("left", "centre", "right")[min(2, int(3 * cx / w))]
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


def _shape_points(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape of "radius" ``r`` centred at (cx, cy)."""
    if kind == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if kind == "star":
        radii, n, start = (r, r * 0.45), 10, -math.pi / 2
    else:
        radii, n, start = (r,), {"triangle": 3, "diamond": 4, "hexagon": 6}[kind], -math.pi / 2
    return [
        (
            cx + radii[i % len(radii)] * math.cos(start + 2 * math.pi * i / n),
            cy + radii[i % len(radii)] * math.sin(start + 2 * math.pi * i / n),
        )
        for i in range(n)
    ]


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled FreeType font (no system fonts needed) at ``size`` pixels."""
    return ImageFont.load_default(size=size)


def _place(rng: random.Random, size: tuple[int, int], area: tuple[int, int], avoid: list[Box]) -> Box | None:
    """A random ``size`` box inside ``area`` (with a 16 px margin) that overlaps none of ``avoid``."""
    (bw, bh), (w, h) = size, area
    for _attempt in range(100):
        x, y = rng.randint(16, w - bw - 16), rng.randint(16, h - bh - 16)
        box = (x, y, x + bw, y + bh)
        if not any(_overlaps(box, a) for a in avoid):
            return box
    return None


def _polygon_area(points: list[tuple[float, float]]) -> float:
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))) / 2


#: Radius factor per shape so that all shapes of "radius" r cover the area of a circle of radius r: at
#: low resolution a tiny shape is a blob whose darkness then says nothing about its kind.
_EQUAL_AREA = {
    kind: 1.0 if kind == "circle" else math.sqrt(math.pi / _polygon_area(_shape_points(kind, 0, 0, 1)))
    for kind in ("circle", "square", "triangle", "diamond", "star", "hexagon")
}


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, fill: Colour) -> None:
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_shape_points(kind, cx, cy, r), fill=fill)
