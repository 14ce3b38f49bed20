"""Helpers preloaded in the agent's python sandbox, documented in the `python` tool's schema.

Why: a tiny policy cannot write ~280 tokens of verbatim pixel-scanning code, but it can write one line.
With these helpers the oracle's code is `print(count_dots("red") - count_dots("blue"))` or
`v = bar_values(40); print(max(v) - min(v))`: what remains for the agent to get right is the arguments
(which colours, which axis maximum, which bars), the part of a tool call that exploration can fix.
The helpers see only `_pil_images` (the rollout's images), like any code the agent writes.
"""

from __future__ import annotations

#: One line per helper, as the tool's schema shows them to the model.
HELPER_DOCS = (
    'count_dots(colour, img_idx=0): the number of separate dots of a colour ("red", "green", "blue", '
    '"yellow", "purple" or "orange") in an image',
    "bar_values(top, img_idx=0): the values of a bar chart's bars from left to right, for an axis that "
    "runs from 0 at the black baseline to `top` at the black top line",
)

#: The same, in a few words each, for the compact tool descriptions of the tiny scales.
HELPER_SHORT = (
    "count_dots(colour, img_idx=0) counts the dots of a colour",
    "bar_values(top, img_idx=0) reads the bars of a chart whose axis runs from 0 to top",
)

#: Named colours, as the suites draw them (axpo_core.envs.suites.COLOURS; repeated here because this
#: source runs inside the sandbox, which imports nothing of the project).
PRELOAD = '''
_COLOURS = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220),
    "yellow": (240, 200, 20), "purple": (140, 50, 180), "orange": (245, 130, 20),
}


def count_dots(colour, img_idx=0):
    """The number of separate dots (4-connected blobs) of a named colour in image `img_idx`."""
    from PIL import Image, ImageChops

    if colour not in _COLOURS:
        raise ValueError(f"unknown colour {colour!r}; known: {', '.join(_COLOURS)}")
    image = _pil_images[img_idx].convert("RGB")
    width = image.size[0]
    # Pixels within 40 of the colour in every channel (Pillow does the per-pixel work in C).
    red, green, blue = ImageChops.difference(image, Image.new("RGB", image.size, _COLOURS[colour])).split()
    near = ImageChops.lighter(ImageChops.lighter(red, green), blue).point(lambda v: 255 if v < 40 else 0)
    todo = {(i % width, i // width) for i, v in enumerate(near.tobytes()) if v}
    blobs = 0
    while todo:
        blobs += 1
        stack = [todo.pop()]
        while stack:
            x, y = stack.pop()
            for p in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                if p in todo:
                    todo.remove(p)
                    stack.append(p)
    return blobs


def bar_values(top, img_idx=0):
    """Bar values, left to right, of a chart whose axis runs from 0 (black baseline) to `top` (black top
    line): the two black lines are found in the leftmost columns, each bar's height in its coloured pixels."""
    image = _pil_images[img_idx].convert("RGB")
    width, height = image.size
    px = image.load()
    lines = [y for y in range(height) if sum(px[2, y]) < 100]
    if len(lines) != 2:
        raise ValueError("no chart axis found: expected a black top line and a black baseline")
    first, base = lines

    def coloured(x, y):
        return max(px[x, y]) - min(px[x, y]) > 80

    values, x = [], 0
    while x < width - 3:
        if coloured(x, base - 1):
            filled = sum(coloured(x + 3, y) for y in range(first, base))
            values.append(round(top * filled / (base - first)))
            while x < width and coloured(x, base - 1):
                x += 1
        x += 1
    return values
'''
