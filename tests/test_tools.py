"""The tool layer: parsing, image_zoom_in geometry, image guards, session limits, and totality."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from axpo_core.envs.search import Document, SearchIndex
from axpo_core.envs.suites import world
from axpo_core.envs.tools import (
    NOTE_CHARS,
    TOOL_NAMES,
    UNOPENED_CALL,
    ToolCall,
    ToolResult,
    ToolSession,
    cap_text,
    check_image,
    load_image,
    parse_tool_call,
    system_prompt,
    tool_schemas,
)


def gradient(width: int, height: int) -> Image.Image:
    """Pixel (x, y) = (x % 256, y % 256, 7): crops can be checked pixel by pixel."""
    img = Image.new("RGB", (width, height))
    img.putdata([(x % 256, y % 256, 7) for y in range(height) for x in range(width)])
    return img


def call(name: str, **arguments) -> str:
    return json.dumps({"name": name, "arguments": arguments})


# ------------------------------------------------------------------------------------------- prompt


def test_schemas_and_system_prompt():
    schemas = tool_schemas()
    assert [s["function"]["name"] for s in schemas] == list(TOOL_NAMES)
    assert all(s["type"] == "function" and s["function"]["parameters"]["type"] == "object" for s in schemas)
    prompt = system_prompt()
    block = prompt.split("<tools>\n")[1].split("\n</tools>")[0]
    assert [json.loads(line) for line in block.splitlines()] == schemas  # one schema per line
    assert "within <tool_call></tool_call> XML tags" in prompt
    assert "<think></think>" in prompt and "<answer>\\boxed{...}</answer>" in prompt
    only_zoom = system_prompt(["image_zoom_in"])
    assert '"name": "image_zoom_in"' in only_zoom and '"name": "python"' not in only_zoom
    assert '"name": "search"' not in system_prompt(["image_zoom_in", "python"])
    assert "<tools>" not in system_prompt([]) and "\\boxed" in system_prompt([])
    (search,) = tool_schemas(["search"])
    assert search["function"]["parameters"]["required"] == ["query"]
    assert search["function"]["parameters"]["properties"]["max_results"]["maximum"] == 10
    assert json.dumps(search) in system_prompt(["search"])
    with pytest.raises(ValueError, match="browser"):
        system_prompt(["browser"])


# ------------------------------------------------------------------------------------------- parsing


def test_parse_valid_calls():
    raw = (
        '\n{"name": "image_zoom_in", "arguments": {"bbox_2d": [100, 200, 300, 400], "label": "sign", '
        '"img_idx": 0}}\n'
    )
    assert parse_tool_call(raw) == ToolCall(
        "image_zoom_in", {"bbox_2d": [100, 200, 300, 400], "label": "sign", "img_idx": 0}
    )
    assert parse_tool_call(call("image_zoom_in", bbox_2d=[0.5, 0, 1000, 999.9], label="")) == ToolCall(
        "image_zoom_in", {"bbox_2d": [0.5, 0, 1000, 999.9], "label": ""}
    )
    openai_style = json.dumps({"name": "python", "arguments": json.dumps({"code": "print(1)"})})
    assert parse_tool_call(openai_style) == ToolCall("python", {"code": "print(1)"})


ZOOM = {"bbox_2d": [100, 200, 300, 400], "label": "sign", "img_idx": 0}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ('{"name": "python", "arguments": {"code": "1"}', "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
        ('{"name": "python"} trailing', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"python"', "must be a JSON object"),
        ('{"arguments": {"code": "1"}}', 'no "name"'),
        ('{"name": 3, "arguments": {}}', '"name" must be a string'),
        ('{"name": "browser", "arguments": {}}', 'unknown tool "browser"'),
        ('{"name": "search", "arguments": {}}', 'missing the required argument(s) "query"'),
        (call("search", query="x", top_k=3), 'unexpected argument(s) "top_k"'),
        (call("search", query=3), '"query" must be a string'),
        (call("search", query=" \n"), '"query" is empty'),
        (call("search", query="x" * 501), '"query" is too long'),
        (call("search", query="x", max_results=0), '"max_results" must be an integer from 1 to 10'),
        (call("search", query="x", max_results=11), "from 1 to 10, got 11"),
        (call("search", query="x", max_results=2.5), "from 1 to 10, got 2.5"),
        (call("search", query="x", max_results="3"), "from 1 to 10"),
        (call("search", query="x", max_results=True), "from 1 to 10, got true"),
        ('{"name": "python"}', 'no "arguments"'),
        ('{"name": "python", "arguments": "{bad"}', "not a valid JSON object"),
        ('{"name": "python", "arguments": [1]}', '"arguments" of python must be a JSON object'),
        ('{"name": "python", "arguments": "[1]"}', '"arguments" of python must be a JSON object'),
        (call("python"), 'missing the required argument(s) "code"'),
        (call("image_zoom_in", label="x"), 'missing the required argument(s) "bbox_2d"'),
        (call("python", code="1", timeout=3), 'unexpected argument(s) "timeout"'),
        (call("image_zoom_in", **ZOOM, zoom=2), 'unexpected argument(s) "zoom"'),
        (call("python", code=5), '"code" must be a string'),
        (call("python", code="  \n"), '"code" is empty'),
        (call("image_zoom_in", **{**ZOOM, "bbox_2d": [1, 2, 3]}), "list of 4 numbers"),
        (call("image_zoom_in", **{**ZOOM, "bbox_2d": [1, 2, 3, "4"]}), "list of 4 numbers"),
        (call("image_zoom_in", **{**ZOOM, "bbox_2d": [1, 2, 3, True]}), "list of 4 numbers"),
        (call("image_zoom_in", **{**ZOOM, "bbox_2d": "0,0,10,10"}), "list of 4 numbers"),
        (call("image_zoom_in", **{**ZOOM, "bbox_2d": [0, 0, 1200, 800]}), "between 0 and 1000"),
        (call("image_zoom_in", **{**ZOOM, "bbox_2d": [-1, 0, 10, 10]}), "between 0 and 1000"),
        (
            '{"name": "image_zoom_in", "arguments": {"bbox_2d": [0, 0, NaN, 9], "label": "a"}}',
            "between 0 and 1000",
        ),
        (call("image_zoom_in", **{**ZOOM, "label": 3}), '"label" must be a string'),
        (call("image_zoom_in", **{**ZOOM, "img_idx": -1}), '"img_idx" must be a non-negative integer'),
        (call("image_zoom_in", **{**ZOOM, "img_idx": 0.5}), '"img_idx" must be a non-negative integer'),
        (call("image_zoom_in", **{**ZOOM, "img_idx": "0"}), '"img_idx" must be a non-negative integer'),
    ],
)
def test_parse_errors(raw, expected):
    message = parse_tool_call(raw)
    assert isinstance(message, str)
    assert message.startswith("Error:")
    assert expected in message


@pytest.mark.parametrize("bbox", [[500, 0, 500, 10], [0, 600, 10, 100]])
def test_an_inverted_box_is_a_well_formed_call_that_misses(bbox):
    """Four numbers in range pass the schema; x1 >= x2 or y1 >= y2 is an empty region: an execution error
    (the call was written right, the region was wrong), not a format error."""
    assert not isinstance(parse_tool_call(call("image_zoom_in", **{**ZOOM, "bbox_2d": bbox})), str)
    with ToolSession([Image.new("RGB", (100, 100))]) as session:
        result = session.execute(call("image_zoom_in", **{**ZOOM, "bbox_2d": bbox}))
    assert result.outcome == "execution" and "x1 < x2 and y1 < y2" in result.text


def test_malformed_calls_are_format_outcomes():
    with ToolSession([Image.new("RGB", (100, 100))], max_calls=10) as session:
        assert session.execute("{not json").outcome == "format"
        assert session.execute(call("browser", url="x")).outcome == "format"
        assert session.execute(call("image_zoom_in", **{**ZOOM, "bbox_2d": [1, 2, 3]})).outcome == "format"
        assert session.execute(call("image_zoom_in", **{**ZOOM, "img_idx": 5})).outcome == "execution"
        assert session.execute(call("image_zoom_in", **ZOOM)).outcome == "ok"
    with ToolSession([Image.new("RGB", (100, 100))], max_calls=0) as session:  # the budget is spent
        assert session.execute(call("image_zoom_in", **ZOOM)).outcome == "execution"


# ------------------------------------------------------------------------------------------- zoom


def test_zoom_crop_geometry_and_pixels():
    image = gradient(200, 100)
    with ToolSession([image]) as session:
        result = session.execute(call("image_zoom_in", bbox_2d=[250, 100, 750, 900], label="sign", img_idx=0))
        assert result.error is None and result.name == "image_zoom_in"
        assert result.text == 'Zoomed in on "sign" (image 1).'
        (crop,) = result.images
        assert session.images == [image, crop]
        assert crop.size == (100, 80)  # x 50..150, y 10..90
        assert crop.getpixel((0, 0)) == (50, 10, 7)
        assert crop.getpixel((99, 79)) == (149, 89, 7)
        # Zooming into the crop: coordinates are relative to the crop.
        again = session.execute(
            call("image_zoom_in", bbox_2d=[500, 500, 1000, 1000], label="corner", img_idx=1)
        )
        (crop2,) = again.images
        assert again.text == 'Zoomed in on "corner" (image 2).'
        assert crop2.size == (50, 40)
        assert crop2.getpixel((0, 0)) == (100, 50, 7)
        assert len(session.images) == 3


def test_zoom_keeps_full_resolution():
    big = Image.new("RGB", (4000, 3000), (1, 2, 3))
    with ToolSession([big]) as session:
        (crop,) = session.execute(call("image_zoom_in", bbox_2d=[0, 0, 1000, 1000], label="all")).images
        assert crop.size == (4000, 3000)
        (crop,) = session.execute(call("image_zoom_in", bbox_2d=[0, 0, 100, 100], label="corner")).images
        assert crop.size == (400, 300)


def test_zoom_errors():
    with ToolSession([gradient(400, 100)], max_calls=100) as session:
        cases = [
            (
                call("image_zoom_in", bbox_2d=[0, 0, 10, 10], label="a", img_idx=1),
                "img_idx 1 is out of range",
            ),
            (call("image_zoom_in", bbox_2d=[0, 0, 1200, 10], label="a"), "between 0 and 1000"),
            (call("image_zoom_in", bbox_2d=[0, 0, 2, 2], label="a"), "is empty"),  # 0.8 x 0.2 pixels
            (call("image_zoom_in", bbox_2d=[0, 0, 1000, 10], label="a"), "aspect ratio"),  # 400 x 1 pixels
            (call("image_zoom_in", bbox_2d=[0, 0, 10], label="a"), "list of 4 numbers"),
        ]
        for raw, expected in cases:
            result = session.execute(raw)
            assert result.text.startswith("Error:") and expected in result.text, result.text
            assert result.error and result.images == [] and result.name == "image_zoom_in"
        assert len(session.images) == 1


def test_check_image_and_load_image_refuse_bombs(tmp_path):
    img = Image.new("RGB", (300, 200))
    check_image(img, 60_000)
    with pytest.raises(ValueError, match="300x200"):
        check_image(img, 59_999)
    path = tmp_path / "picture.png"
    Image.new("RGBA", (300, 200), (9, 8, 7, 128)).save(path)
    loaded = load_image(path, 60_000)
    assert loaded.mode == "RGB" and loaded.size == (300, 200)
    assert load_image(path.read_bytes(), 60_000).size == (300, 200)
    with pytest.raises(ValueError, match="picture.png.*300x200"):
        load_image(path, 1000)
    with pytest.raises(ValueError, match="<bytes>"):
        load_image(path.read_bytes(), 1000)


def test_load_image_refuses_a_huge_header_without_decoding(tmp_path):
    """A PNG that claims 30000x30000 pixels (PIL's own bomb error fires first): still a clear ValueError."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(ValueError, match="bomb.png"):
        load_image(path, 40_000_000)


# ------------------------------------------------------------------------------------------- session


def test_session_limits_and_disabled_tools():
    with ToolSession([gradient(20, 20)], tools=["image_zoom_in"], max_calls=2) as session:
        result = session.execute(call("python", code="print(1)"))
        assert result.text.startswith("Error:") and '"python" is not available' in result.text
        assert result.name == "python"
        assert session.execute("not json").error is not None  # malformed calls count too
        result = session.execute(call("image_zoom_in", bbox_2d=[0, 0, 500, 500], label="a"))
        assert "call limit (2 per episode)" in result.text and result.error
        assert session.num_calls == 3
    assert session.execute(call("image_zoom_in", bbox_2d=[0, 0, 500, 500], label="a")).text.startswith(
        "Error:"
    )


def test_python_tool_sees_zoom_crops():
    with ToolSession([gradient(200, 100)], python_timeout_s=5) as session:
        session.execute(call("image_zoom_in", bbox_2d=[0, 0, 500, 500], label="a"))
        result = session.execute(call("python", code="print([im.size for im in _pil_images])"))
        assert result.error is None and result.name == "python" and result.images == []
        assert result.text.strip() == "[(200, 100), (100, 50)]"
        result = session.execute(call("python", code="_pil_images[1].getpixel((99, 49))"))
        assert result.text.strip() == "(99, 49, 7)"
        failed = session.execute(call("python", code="1/0"))
        assert failed.text.startswith("Error:") and failed.error.startswith("ZeroDivisionError")
        sandbox = session._sandbox
        assert sandbox is not None and sandbox.pid is not None
    assert sandbox.pid is None and sandbox.scratch_dir is None  # __exit__ closed it


# ------------------------------------------------------------------------------------------- search


def test_search_uses_the_builtin_corpus_by_default():
    entity = world()[0][7]
    with ToolSession([gradient(20, 20)]) as session:
        result = session.execute(call("search", query=f"{entity.name} mascot"))
        assert result.error is None and result.name == "search" and result.images == []
        lines = result.text.splitlines()
        assert len(lines) == 3 and lines[0].startswith(f"[1] {entity.name}: ") and entity.mascot in lines[0]
        assert [line[:3] for line in lines] == ["[1]", "[2]", "[3]"]
        one = session.execute(call("search", query=f"{entity.name} mascot", max_results=1))
        assert one.text.splitlines() == lines[:1]
        none = session.execute(call("search", query="qwxz zzyzx"))
        assert none.error is None and none.text == 'No results for "qwxz zzyzx".'
        ten = session.execute(call("search", query="club founded", max_results=10))
        assert len(ten.text.splitlines()) == 10 and len(ten.text) < 4000


def test_search_with_a_given_index(tmp_path):
    (tmp_path / "a.md").write_text("# Alpha\nThe alpha document talks about comets.")
    (tmp_path / "b.txt").write_text("Beta is about rivers.")
    with ToolSession([], tools=["search"], search_index=str(tmp_path)) as session:
        assert session.execute(call("search", query="comets")).text == (
            "[1] Alpha: The alpha document talks about comets."
        )
    own = SearchIndex.from_documents([{"id": "x", "title": "X", "text": "Only x."}])
    with ToolSession([], tools=["search"], search_index=own) as session:
        assert session.execute(call("search", query="only")).text == "[1] X: Only x."


@pytest.mark.parametrize(
    ("index", "expected"),
    [("/nonexistent/corpus", "no document index is available"), ("", "no document index is available")],
)
def test_search_without_an_index_is_a_tool_error(index, expected):
    with ToolSession([], tools=["search"], search_index=index) as session:
        result = session.execute(call("search", query="anything"))
        assert result.text.startswith("Error: search:") and expected in result.text and result.error
    with ToolSession([], tools=["search"], search_index=SearchIndex([])) as session:
        assert "index is empty" in session.execute(call("search", query="anything")).text


def test_search_disabled_and_argument_errors():
    with ToolSession([gradient(20, 20)], tools=["image_zoom_in", "python"]) as session:
        result = session.execute(call("search", query="x"))
        assert '"search" is not available' in result.text and result.name == "search"
    with ToolSession([], tools=["search"], max_calls=100) as session:
        for arguments, expected in [
            ({"query": ""}, '"query" is empty'),
            ({"query": "x", "max_results": 99}, "from 1 to 10"),
            ({"max_results": 3}, 'missing the required argument(s) "query"'),
        ]:
            result = session.execute(call("search", **arguments))
            assert result.text.startswith("Error: search") and expected in result.text, result.text
            assert result.error and result.name == "search"


# ------------------------------------------------------------------------------------------- totality

SNIPPETS = ["print(1)", "x = 1", "x", "1/0", "_pil_images[-1].size", "import os\nos.listdir('/')", "def f(:"]
QUERIES = ["emblem red star", "Club founded", "the of", "", "  ", "1873", "x" * 600, "ünïcödé ☃ \x00"]
json_leaf = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=8)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
number = st.integers(-50, 1050) | st.floats(-50, 1050) | st.floats()
coordinate = st.integers(0, 1000) | st.floats(0, 1000)
ordered_bbox = st.tuples(coordinate, coordinate, coordinate, coordinate).map(
    lambda b: [min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])]
)
bbox = ordered_bbox | st.lists(number, min_size=3, max_size=5) | json_value
label = st.text(max_size=12) | json_value
img_idx = st.integers(-2, 4) | json_value
code = st.sampled_from(SNIPPETS) | st.text(max_size=20) | json_value
query = st.sampled_from(QUERIES) | st.text(max_size=30) | json_value
max_results = st.integers(-2, 12) | json_value
names = ["image_zoom_in", "image_zoom_in", "python", "python", "search", "search", "Python"]
tool_name = st.sampled_from(names) | st.sampled_from(names) | st.text(max_size=8)


@st.composite
def arguments(draw, name: str):
    """Mostly well-formed argument objects for `name`, sometimes with a key missing, extra or ill-typed."""
    if name == "image_zoom_in":
        args = {"bbox_2d": draw(bbox), "label": draw(label)}
        if draw(st.booleans()):
            args["img_idx"] = draw(img_idx)
    elif name == "search":
        args = {"query": draw(query)}
        if draw(st.booleans()):
            args["max_results"] = draw(max_results)
    else:
        args = {"code": draw(code)}
    if draw(st.integers(0, 5)) == 0:
        args.pop(draw(st.sampled_from(sorted(args))))
    if draw(st.integers(0, 5)) == 0:
        args[draw(st.text(max_size=6))] = draw(json_value)
    return args if draw(st.integers(0, 9)) else draw(json_value)


@st.composite
def tool_calls(draw) -> str:
    """Structurally valid-ish tool calls: random names and arguments (sometimes JSON-encoded), sometimes a
    key missing, the payload replaced by random JSON, truncated, or wrapped in whitespace."""
    name = draw(tool_name)
    if name not in TOOL_NAMES or draw(st.integers(0, 4)) == 0:
        args = draw(arguments(draw(st.sampled_from(TOOL_NAMES))))
    else:
        args = draw(arguments(name))
    payload: dict = {"name": name, "arguments": json.dumps(args) if draw(st.integers(0, 4)) == 0 else args}
    if draw(st.integers(0, 9)) == 0:
        payload.pop(draw(st.sampled_from(["name", "arguments"])))
    if draw(st.integers(0, 19)) == 0:
        payload = draw(json_value)
    text = json.dumps(payload)
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return draw(st.sampled_from(["", "\n", " \t"])) + text + draw(st.sampled_from(["", "\n"]))


def test_execute_is_total_on_arbitrary_input():
    session = ToolSession([gradient(64, 48)], max_calls=10**9, python_timeout_s=2)
    assert session.tools == TOOL_NAMES and "search" in TOOL_NAMES
    executed, searched = 0, 0

    @settings(
        max_examples=10_500,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.text() | tool_calls())
    def check(raw: str) -> None:
        nonlocal executed, searched
        result = session.execute(raw)  # must not raise
        executed += 1
        searched += result.name == "search" and result.error is None
        assert isinstance(result, ToolResult) and isinstance(result.text, str)
        assert result.error is None or result.text.startswith("Error:")
        assert result.error is None or result.images == []

    try:
        check()
    finally:
        session.close()
    assert executed >= 10_000
    assert searched >= 100  # the search tool really ran, not only its argument errors


# ------------------------------------------------------------------------------------------- hostile input


def _file_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    import io

    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def test_load_image_applies_exif_rotation(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # the left quarter red
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "camera.jpg"
    path.write_bytes(_file_bytes(img, "JPEG", exif=exif.tobytes(), quality=95))
    loaded = load_image(path, 10_000)
    assert loaded.size == (20, 40)
    red, _, blue = loaded.getpixel((10, 2))  # the red quarter is now the top
    assert red > 200 and blue < 60


def test_load_image_scales_16_bit_and_converts_modes(tmp_path):
    import numpy as np

    grey = np.array([[0, 256 * 100, 65535]], dtype=np.uint16)
    loaded = load_image(_file_bytes(Image.fromarray(grey), "PNG"), 100)
    assert [loaded.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (100, 100, 100), (255, 255, 255)]
    cmyk = load_image(_file_bytes(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG"), 100)
    assert cmyk.mode == "RGB" and cmyk.getpixel((1, 1))[0] > 200  # red stays red
    frames = [Image.new("RGB", (4, 4), c) for c in ((9, 9, 9), (200, 0, 0))]
    buffer = _file_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert load_image(buffer, 100).getpixel((0, 0)) == (9, 9, 9)  # the first frame
    assert load_image(_file_bytes(Image.new("L", (1, 1), 5), "PNG"), 100).size == (1, 1)


def test_load_image_refuses_extreme_aspect_ratios_and_bad_files_naming_them(tmp_path):
    wide = tmp_path / "strip.png"
    Image.new("RGB", (300, 1)).save(wide)
    with pytest.raises(ValueError, match="strip.png.*300x1.*aspect ratio above 200:1"):
        load_image(wide, 40_000_000)
    load_image(_file_bytes(Image.new("RGB", (200, 1)), "PNG"), 1000)  # 200:1 is still fine
    full = _file_bytes(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    cut = tmp_path / "cut.png"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match="cannot load .*cut.png.*truncated"):
        load_image(cut, 40_000_000)
    with pytest.raises(ValueError, match="cannot load <bytes>: not an image"):
        load_image(b"GIF89a garbage", 40_000_000)


def test_zoom_crops_of_odd_images_are_rgb_or_tool_errors():
    odd = [
        Image.new("I;16", (30, 20)),
        Image.new("CMYK", (30, 20)),
        Image.new("1", (1, 1)),
        Image.new("F", (9, 9)),
    ]
    with ToolSession(odd, tools=["image_zoom_in"], max_calls=100) as session:
        for idx in range(len(odd)):
            result = session.execute(
                call("image_zoom_in", bbox_2d=[0, 0, 1000, 1000], label="all", img_idx=idx)
            )
            assert result.error is None and result.images[0].mode == "RGB", result.text
        result = session.execute(call("image_zoom_in", bbox_2d=[0, 0, 1000, 1], label="strip", img_idx=0))
        assert result.error and "Error: image_zoom_in" in result.text  # 30 x 0.02 pixels: empty


@pytest.mark.parametrize(
    "raw",
    [
        '{"name": "\\ud800", "arguments": {}}',
        '{"name": "search", "arguments": {"query": "a\\udfff"}}',
        '{"name": "python", "arguments": {"code": "print(\'\\ud83d\')"}}',
        '{"name": "image_zoom_in", "arguments": {"bbox_2d": [0, 0, 9, 9], "label": "\\ud800"}}',
        '{"name": "search", "arguments": "{\\"query\\": \\"\\\\ud800\\"}"}',  # arguments as a JSON string
        '{"\\ud800": 1, "name": "search", "arguments": {"query": "x"}}',
        '{"name": "search", "arguments": {"query": "x"}, "extra": [[["\\udc00"]]]}',
    ],
)
def test_lone_surrogates_become_an_encodable_tool_error(raw):
    with ToolSession([gradient(20, 20)]) as session:
        result = session.execute(raw)
    assert result.error and "invalid Unicode" in result.text, result.text
    json.dumps({"text": result.text, "error": result.error}, ensure_ascii=False).encode("utf-8")


def test_echoed_text_is_encodable_single_line_and_a_valid_surrogate_pair_is_kept():
    with ToolSession([gradient(20, 20)], max_calls=10) as session:
        label = "a\x00b\x1b[31m\nc <|image_pad|>"
        result = session.execute(call("image_zoom_in", bbox_2d=[0, 0, 1000, 1000], label=label))
        assert result.text == 'Zoomed in on "ab[31m c <|image_pad|>" (image 1).'  # the tokenizer escapes tags
        name = session.execute(
            json.dumps({"name": "😀\x00", "arguments": {}})
        )  # an escaped pair: a real char
        assert "😀" in name.text and "\x00" not in name.text and name.text.isprintable()


# ------------------------------------------------------------------------------------------- one cap


def test_cap_text_keeps_the_head_and_says_how_much_was_cut():
    assert cap_text("x" * 10, 10) == "x" * 10
    assert cap_text("x" * (10 + NOTE_CHARS), 10) == "x" * (10 + NOTE_CHARS)  # a note's room: kept whole
    long = "a" * 10 + "b" * (NOTE_CHARS + 1)
    assert cap_text(long, 10) == "a" * 10 + f"\n... [{NOTE_CHARS + 1} more characters cut]"
    assert len(cap_text("y" * 5_000_000, 2000)) <= 2000 + NOTE_CHARS


def test_every_tool_text_has_one_cap():
    """Issue 27 item 3: a python exception's message, a malformed call's error, a search result and the
    engine's own message for a lone `</tool_call>` all leave the session under the same cap."""
    index = SearchIndex([Document(f"p{i}", f"Page {i}", "word " * 300) for i in range(5)])
    with ToolSession([gradient(64, 48)], max_calls=10, python_timeout_s=5, python_max_output_chars=40,
                     search_index=index) as session:
        results = {
            "python error": session.execute(call("python", code="{}['C' * 5_000_000]")),
            "python traceback": session.execute(
                call("python", code="def f(n):\n    return f(n + 1)\nprint('o' * 500)\nf(0)")
            ),
            "malformed": session.execute(call("n" * 200, code="x")),
            "search": session.execute(call("search", query="word", max_results=5)),
            "lone </tool_call>": session.unopened_call(),
        }
    if results["python error"].error == "python sandbox refused: weaker isolation than required":
        pytest.skip("the python sandbox refuses to run on this host")
    for name, result in results.items():
        assert len(result.text) <= 40 + NOTE_CHARS, (name, len(result.text))
        assert result.error is None or len(result.error) <= 40 + NOTE_CHARS, (name, result.error)
    assert results["python error"].error.startswith("KeyError: 'CCC")
    assert results["python error"].text.endswith("more characters cut]")
    assert results["python traceback"].error.startswith("RecursionError")
    assert results["malformed"].outcome == "format" and results["malformed"].text.endswith("characters cut]")
    assert results["search"].error is None and results["search"].text.endswith("characters cut]")
    unopened = results["lone </tool_call>"]
    assert unopened.text == UNOPENED_CALL and unopened.outcome == "format"
