"""The run report and the rollout viewer, built from a crafted run folder and read in a real browser.

The run folder is written with the project's own Trajectory records, serialization and diagnostics, in the
pipeline's layout, so the report is tested on what the flows write. The pages are opened in headless
Chromium and checked on what is visible, including that model text cannot inject markup.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import headless_chromium
from PIL import Image

from axpo_core.algorithms.diagnostics import step_diagnostics
from axpo_core.envs.suites import get_suite, question_by_id
from axpo_core.evaluation.report import build_report
from axpo_core.evaluation.viewer import parse_steps
from axpo_core.rollout.serialization import requests_to_records, trajectories_to_bytes
from axpo_core.rollout.trajectory import ContinuationRequest, Parent, Trajectory

PROMPT = 12  # prompt tokens of every crafted trajectory
INJECTED = "<script>document.title='pwned'</script>"
INJECTED_IMG = "<img src=x onerror=\"document.title='pwned-img'\">"
PREFIX_THINK = "The tiny square sits inside the black frame; I will zoom in on it."


def tool_response(text: str, images: int) -> str:
    """The tool's user turn as `ChatFormat.tool_response` writes it, decoded with special tokens kept."""
    vision = "<|vision_start|>" + "<|image_pad|>" * 6 + "<|vision_end|>"
    return (
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n"
        + vision * images
        + f"{text}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )


def zoom_call(bbox: list[int]) -> str:
    return json.dumps(
        {"name": "image_zoom_in", "arguments": {"bbox_2d": bbox, "label": "frame", "img_idx": 0}}
    )


def trajectory(
    question_id: str,
    sample_id: int,
    text: str,
    reward: float,
    images: list[Image.Image],
    calls: list[str] = (),
    errors: list[str | None] = (),
    parent: Parent | None = None,
    group_id: str | None = None,
    prefix_text: str = "",
    truncated: bool = False,
) -> Trajectory:
    n = PROMPT + max(len(text) // 4, 1)
    t = Trajectory(
        question_id=question_id,
        sample_id=sample_id,
        token_ids=list(range(n)),
        logprobs=[0.0] * PROMPT + [-0.5] * (n - PROMPT),
        entropies=[0.0] * n,
        loss_mask=[0] * PROMPT + [1] * (n - PROMPT),
        prompt_len=PROMPT,
        images=list(images),
        tool_call_spans=[(PROMPT + i, PROMPT + i + 1) for i in range(len(calls))],
        tool_calls=list(calls),
        tool_errors=list(errors) if errors else [None] * len(calls),
        tool_outcomes=[("ok" if e is None else "execution") for e in (errors or [None] * len(calls))],
        tool_call_opened=[True] * len(calls),
        turns=text.count("<|im_start|>assistant") + 1,
        truncated=truncated,
        reward=reward,
        text=text,
        parent=parent,
        group_id=group_id,
    )
    t.prefix_text = (
        prefix_text  # record() writes it (set after construction: not every version has the field)
    )
    return t


def write_round(
    arm: Path, round_index: int, originals, continuations=(), requests=(), kl: float = 0.0
) -> None:
    rollouts = arm / "rollouts"
    rollouts.mkdir(parents=True, exist_ok=True)
    base = rollouts / f"round-{round_index}"
    Path(f"{base}.jsonl").write_text("".join(json.dumps(t.record()) + "\n" for t in originals))
    Path(f"{base}.jsonl.pkl").write_bytes(trajectories_to_bytes(originals))
    if continuations:
        Path(f"{base}.resampled.jsonl").write_text(
            "".join(json.dumps(t.record()) + "\n" for t in continuations)
        )
        Path(f"{base}.resampled.pkl").write_bytes(trajectories_to_bytes(continuations))
        Path(f"{base}.requests.json").write_text(json.dumps(requests_to_records(requests)))
    metrics = step_diagnostics(originals, continuations, requests, [])
    metrics.update({"update/kl": kl, "update/loss": 0.1})
    (arm / "metrics").mkdir(exist_ok=True)
    (arm / "metrics" / f"round-{round_index}.json").write_text(json.dumps(metrics))


def write_eval(stage_dir: Path, benchmark: str, rewards: list[list[int]], tool_users: int) -> None:
    """Eval records: `rewards[q][s]` per question and sample; the first `tool_users` samples call a tool."""
    rows, index = [], 0
    for q, per_sample in enumerate(rewards):
        for s, reward in enumerate(per_sample):
            calls = [zoom_call([0, 0, 500, 500])] if index < tool_users else []
            text = "<think>ok</think>\n<answer>\\boxed{1}</answer><|im_end|>"
            t = trajectory(f"{benchmark}-2000-{q}", s, text, float(reward), [], calls)
            rows.append({"benchmark": benchmark, **t.record()})
            index += 1
    (stage_dir / "eval").mkdir(parents=True, exist_ok=True)
    (stage_dir / "eval" / f"{benchmark}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def grpo_group(question_id: str) -> list[Trajectory]:
    """A GRPO group: a correct zoom, a no-tool answer with injected markup, a failed call, a truncation."""
    q = question_by_id(question_id)
    image = q.images[0]
    crop = image.crop((0, 0, 200, 200))
    think_call, answer = get_suite(q.suite).oracle(q)
    good = think_call + tool_response("Zoomed in on 'black frame'.", 1) + answer + "<|im_end|>"
    injected = f"<think>I think {INJECTED} it is red</think>\n<answer>\\boxed{{red}} {INJECTED_IMG}</answer>"
    injected += "<|im_end|>"
    bad_call = "<think>Zoom on the corner.</think>\n<tool_call>\n" + zoom_call([900, 900, 2000, 2000])
    bad = bad_call + "\n</tool_call>" + tool_response("Error: bbox out of range", 0)
    bad += "<think>No luck.</think>\n<answer>\\boxed{blue}</answer><|im_end|>"
    return [
        trajectory(question_id, 0, good, 1.0, [image, crop], [zoom_call([58, 459, 185, 595])]),
        trajectory(question_id, 1, injected, 0.0, [image]),
        trajectory(
            question_id, 2, bad, 0.0, [image], [zoom_call([900, 900, 2000, 2000])], ["bbox out of range"]
        ),
        trajectory(question_id, 3, "<think>Hmm, the frame is", 0.0, [image], truncated=True),
    ]


def axpo_round(question_id: str) -> tuple[list[Trajectory], list[Trajectory], list[ContinuationRequest]]:
    """A triggered group (both tool users wrong) and K = 4 continuations of rollout #0's prefix."""
    q = question_by_id(question_id)
    image = q.images[0]
    prefix = f"<think>{PREFIX_THINK}</think>\n<tool_call>"
    wrong_call = "\n" + zoom_call([800, 0, 999, 200]) + "\n</tool_call>"
    wrong = prefix + wrong_call + tool_response("Zoomed in on 'frame'.", 1)
    wrong += "<think>Nothing there; I guess.</think>\n<answer>\\boxed{purple}</answer><|im_end|>"
    originals = [
        trajectory(
            question_id,
            0,
            wrong,
            0.0,
            [image, image.crop((700, 0, 968, 200))],
            [zoom_call([800, 0, 999, 200])],
        ),
        trajectory(
            question_id,
            1,
            wrong.replace("purple", "orange"),
            0.0,
            [image, image.crop((0, 0, 99, 99))],
            ["{}"],
        ),
        trajectory(
            question_id, 2, "<think>Looks red.</think>\n<answer>\\boxed{red}</answer><|im_end|>", 0.0, [image]
        ),
        trajectory(
            question_id,
            3,
            f"<think>Clearly {q.answer}.</think>\n<answer>\\boxed{{{q.answer}}}</answer>",
            1.0,
            [image],
        ),
    ]
    source = originals[0]
    cut = PROMPT + 8
    group_id = f"{question_id}/axpo-4"
    request = ContinuationRequest(source, cut, 4, group_id, 4)
    continuations = []
    for k, (bbox, answer) in enumerate(
        [
            ([58, 459, 185, 595], q.answer),
            ([0, 0, 300, 300], "red"),
            ([40, 440, 200, 610], q.answer),
            ([500, 500, 600, 600], "blue"),
        ]
    ):
        crop = image.crop(tuple(int(v * 0.9) for v in bbox))
        text = (
            prefix + "\n" + zoom_call(bbox) + "\n</tool_call>" + tool_response(f"Zoomed in (branch {k}).", 1)
        )
        text += f"<think>Branch {k} sees {answer}.</think>\n<answer>\\boxed{{{answer}}}</answer><|im_end|>"
        reward = 1.0 if answer == q.answer else 0.0
        continuations.append(
            trajectory(
                question_id,
                4 + k,
                text,
                reward,
                [image, crop],
                [zoom_call(bbox)],
                parent=Parent(source.sample_id, cut),
                group_id=group_id,
                prefix_text=prefix,
            )
        )
    return originals, continuations, [request]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "exp" / "run1"
    scale = run / "tiny-s"
    grpo, axpo = scale / "sft_grpo", scale / "sft_axpo"
    write_round(grpo, 1, grpo_group("zoom_detail-1000-0"), kl=0.001)
    write_round(grpo, 2, grpo_group("zoom_detail-1000-2")[:2], kl=0.002)
    originals, continuations, requests = axpo_round("zoom_detail-1000-1")
    write_round(axpo, 1, originals, continuations, requests, kl=0.001)
    write_round(axpo, 2, grpo_group("zoom_detail-1000-3"), kl=0.003)
    write_round(scale / "sft_axpo_no_credit", 1, grpo_group("zoom_detail-1000-4"))
    write_eval(grpo, "zoom_detail", [[1, 0, 0, 0], [0, 0, 0, 0]], tool_users=1)
    write_eval(grpo, "python_count", [[1, 0, 0, 0], [0, 0, 0, 0]], tool_users=0)
    write_eval(axpo, "zoom_detail", [[1, 1, 0, 0], [1, 0, 0, 0]], tool_users=4)
    write_eval(axpo, "python_count", [[1, 1, 1, 1], [1, 0, 0, 0]], tool_users=2)
    ablation = scale / "sft_axpo_no_credit"
    write_eval(ablation, "zoom_detail", [[1, 0, 0, 0], [1, 0, 0, 0]], tool_users=0)
    write_eval(ablation, "python_count", [[1, 1, 0, 0], [0, 0, 0, 0]], tool_users=0)
    (scale / "checkpoints" / "sft").mkdir(parents=True)  # model folders are ignored
    build_report(run)
    return run


def md_table(markdown: str, heading: str) -> list[list[str]]:
    """The rows (header first) of the Markdown table under `## <heading>…`."""
    section = markdown.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_parse_steps_splits_turns_and_tool_responses():
    text = (
        "<think>a</think>\n<tool_call>\n{}\n</tool_call>"
        + tool_response("done", 2)
        + "<answer>x</answer><|im_end|>"
    )
    steps = parse_steps(text)
    assert [(s.kind, s.turn, s.text(text)) for s in steps] == [
        ("think", 1, "a"),
        ("tool_call", 1, "{}"),
        ("tool_response", 1, "done"),
        ("answer", 2, "x"),
    ]
    assert steps[2].images == 2 and steps[1].call_index == 0
    # A `</tool_call>` without an opening tag is the engine's one malformed ("unopened") call.
    assert [s.kind for s in parse_steps("junk</tool_call>")] == ["tool_call"]


def test_report_markdown_tables_and_plots(run_dir: Path):
    report = run_dir / "report"
    markdown = (report / "report.md").read_text()
    results = md_table(markdown, "Results")
    assert results[0] == [
        "scale", "stage", "python_count pass@1", "zoom_detail pass@1", "average pass@1",
        "python_count pass@4", "zoom_detail pass@4", "average pass@4",
    ]  # fmt: skip
    assert results[1:] == [  # the paper's order; the ablation arm has its own table
        ["tiny-s", "SFT+GRPO", "12.5", "12.5", "12.5", "50.0", "50.0", "50.0"],
        ["tiny-s", "SFT+AXPO", "62.5", "37.5", "50.0", "100.0", "100.0", "100.0"],
    ]
    ablations = {row[1]: row for row in md_table(markdown, "Ablations")[1:]}
    assert list(ablations) == ["SFT+GRPO", "SFT+AXPO", "SFT+AXPO[no_credit]"]
    assert ablations["SFT+AXPO[no_credit]"][2:5] == ["25.0", "75.0", "-25.0"]
    tools = {row[1]: row[2:5] for row in md_table(markdown, "Tool-call rate")[1:]}
    assert tools["SFT+GRPO"] == ["0.0", "12.5", "6.2"] and tools["SFT+AXPO"] == ["25.0", "50.0", "37.5"]
    summary = {row[1]: row for row in md_table(markdown, "Training diagnostics")[1:]}
    header = md_table(markdown, "Training diagnostics")[0]
    assert summary["SFT+AXPO"][header.index("flip %")] == "100.0"  # the one resampled group recovered
    assert summary["SFT+GRPO"][header.index("flip %")] == "–"  # nothing resampled: nothing to measure
    for name in ("pass_at_k", "ablations", "tool_calls", "diagnostics_summary", "diagnostics"):
        assert (report / f"{name}.csv").read_text().count("\n") >= 2

    plots = sorted((report / "plots").glob("*.png"))
    names = {p.stem for p in plots}
    assert {
        "tiny-s__tool_use_rate",
        "tiny-s__all_wrong_rate_tool",
        "tiny-s__flip_rate",
        "tiny-s__reward_mean",
    } <= names
    for path in plots:
        assert f"](plots/{path.name})" in markdown
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width >= 400 and image.height >= 250
            colours = {c for _, c in image.convert("RGB").getcolors(maxcolors=1 << 20)}
            assert len(colours) > 30, path.name
    with Image.open(report / "plots" / "tiny-s__tool_use_rate.png") as image:
        colours = {c for _, c in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert (0x1F, 0x77, 0xB4) in colours and (0xD6, 0x27, 0x28) in colours  # SFT+GRPO and SFT+AXPO lines


# ------------------------------------------------------------------------------------------ browser



@pytest.fixture(scope="module")
def browser():
    yield from headless_chromium("1300,1600")


def loaded(driver, image) -> bool:
    return image.is_displayed() and driver.execute_script(
        "return arguments[0].complete && arguments[0].naturalWidth > 0", image
    )


def opened(driver, details) -> None:
    """Wait for a `<details>` to open (the hashchange handler runs after the click returns)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 5).until(lambda _: details.get_attribute("open") is not None)


def test_report_html_in_browser(run_dir: Path, browser):
    from selenium.webdriver.common.by import By

    browser.get((run_dir / "report" / "report.html").as_uri())
    table = browser.find_element(By.CSS_SELECTOR, "table.pass_at_k")
    assert table.is_displayed()
    rows = {
        cells[1].text: [c.text for c in cells]
        for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")
        if (cells := row.find_elements(By.TAG_NAME, "td"))
    }
    assert list(rows) == ["SFT+GRPO", "SFT+AXPO"]
    assert rows["SFT+AXPO"][2:5] == ["62.5", "37.5", "50.0"]  # Pass@1: python_count, zoom_detail, average
    assert "Pass@1" in table.text and "Pass@4" in table.text
    images = browser.find_elements(By.CSS_SELECTOR, ".plots img")
    assert len(images) >= 4 and all(loaded(browser, img) for img in images)
    assert browser.find_element(By.LINK_TEXT, "Rollout viewer").is_displayed()


def test_rollout_viewer_in_browser(run_dir: Path, browser):
    from selenium.webdriver.common.by import By

    browser.get((run_dir / "report" / "rollouts.html").as_uri())
    title = browser.title
    assert title == "Rollouts: exp/run1"

    # AXPO, round 1 (marked * for "resampled"): open it from the index, then the triggered question.
    index_row = browser.find_element(By.XPATH, "//table[@class='index']//tr[td/a[contains(., 'SFT+AXPO')]]")
    index_row.find_element(By.LINK_TEXT, "1*").click()
    round_one = browser.find_element(By.ID, "tiny_s-SFT_AXPO-round-1")
    opened(browser, round_one)  # the page's script opens the fold the link points into
    group = round_one.find_element(By.CSS_SELECTOR, "details.group")
    group.find_element(By.TAG_NAME, "summary").click()
    assert "zoom_detail-1000-1" in group.text and "triggered" in group.text
    assert loaded(browser, group.find_element(By.CSS_SELECTOR, ".question img.question-image"))

    source = group.find_element(By.CSS_SELECTOR, "article.rollout[data-sample='0']")
    assert source.is_displayed() and "rollout #0" in source.text
    call = source.find_element(By.CSS_SELECTOR, ".step.tool_call pre")
    assert call.is_displayed() and '"image_zoom_in"' in call.text and "[800, 0, 999, 200]" in call.text
    assert loaded(browser, source.find_element(By.CSS_SELECTOR, ".step.tool_response img.tool-image"))

    branches = source.find_element(By.CSS_SELECTOR, ".branches")
    prefix = branches.find_element(By.CSS_SELECTOR, ".shared-prefix")
    assert branches.is_displayed() and prefix.is_displayed()
    assert branches.text.count(PREFIX_THINK) == 1  # the prefix once, not once per continuation
    assert "rewards 1 0 1 0" in branches.text
    items = branches.find_elements(By.CSS_SELECTOR, "ol.continuations > li.continuation")
    assert [item.find_element(By.CSS_SELECTOR, ".reward").text for item in items] == [
        "reward 1 ✓", "reward 0 ✗", "reward 1 ✓", "reward 0 ✗",
    ]  # fmt: skip
    assert all(item.is_displayed() for item in items)
    assert browser.execute_script(  # the continuations come after (under) the prefix they share
        "return !!(arguments[0].compareDocumentPosition(arguments[1]) & Node.DOCUMENT_POSITION_FOLLOWING)",
        prefix,
        items[0],
    )
    first = items[0]
    assert "[58, 459, 185, 595]" in first.text and "Branch 0 sees" in first.text
    assert PREFIX_THINK not in first.text  # a continuation shows only what follows the prefix
    assert loaded(browser, first.find_element(By.CSS_SELECTOR, "img.tool-image"))

    # GRPO, round 1: the rollout whose text carries markup shows it as text, and nothing ran.
    browser.find_element(By.XPATH, "//table[@class='index']//tr[td/a[contains(., 'SFT+GRPO')]]").find_element(
        By.LINK_TEXT, "1"
    ).click()
    opened(browser, browser.find_element(By.ID, "tiny_s-SFT_GRPO-round-1"))
    grpo_group = browser.find_element(By.ID, "tiny_s-SFT_GRPO-1-zoom_detail_1000_0")
    grpo_group.find_element(By.TAG_NAME, "summary").click()
    injected = grpo_group.find_element(By.CSS_SELECTOR, "article.rollout[data-sample='1']")
    assert injected.is_displayed()
    assert INJECTED in injected.text and "onerror=" in injected.text
    assert browser.title == title
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1  # the page's own, nothing from the model
    assert not browser.find_elements(By.CSS_SELECTOR, "img[src='x']")
    errored = grpo_group.find_element(By.CSS_SELECTOR, "article.rollout[data-sample='2']")
    assert "tool error: bbox out of range" in errored.text and "1 tool error" in errored.text


def test_the_viewer_labels_each_arm_by_its_algorithm(tmp_path: Path):
    """SFT+ARPO and SFT+RLTF (once labelled GRPO), an ablation that names GRPO, and AXPO's own."""
    import re

    from axpo_core.evaluation.run_dir import read_run
    from axpo_core.evaluation.viewer import render_viewer

    scale = tmp_path / "exp" / "run1" / "tiny-s"
    arms = {"sft_arpo": "ARPO", "sft_rltf": "RLTF", "sft_grpo_x2": "GRPO", "sft_axpo": "AXPO", "grpo": "GRPO"}
    for slug in arms:
        write_round(scale / slug, 1, grpo_group("zoom_detail-1000-0"))
    run = read_run(scale.parent)
    (read,) = run.scales
    assert {stage: arm.algo for stage, arm in read.arms.items()} == {
        "SFT+ARPO": "arpo", "SFT+RLTF": "rltf", "SFT+GRPO[x2]": "grpo", "SFT+AXPO": "axpo", "GRPO": "grpo",
    }
    html = render_viewer(run)
    headings = re.findall(r'<h2>tiny-s · ([^<]+?) <span class="algo">([A-Z]+)</span></h2>', html)
    assert sorted(headings) == sorted(
        [("SFT+ARPO", "ARPO"), ("SFT+RLTF", "RLTF"), ("SFT+GRPO[x2]", "GRPO"), ("SFT+AXPO", "AXPO"),
         ("GRPO", "GRPO")]
    )
