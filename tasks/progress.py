"""Progress bars for long work: the pipeline's steps, RL rounds, the evaluation fan-out, SFT steps.

tqdm on stderr. `AXPO_PROGRESS` chooses: `auto` (default: shown on a terminal, off in logs and CI),
`1` always, `0` never.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm


def progress_enabled() -> bool:
    choice = os.environ.get("AXPO_PROGRESS", "auto").strip().lower()
    if choice in ("1", "true", "yes", "on"):
        return True
    if choice in ("0", "false", "no", "off"):
        return False
    return sys.stderr.isatty()


def progress(iterable: Iterable | None = None, *, desc: str, total: int | None = None, leave: bool = True):
    """A tqdm bar (a no-op one when progress is off); inner bars pass `leave=False`."""
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=not progress_enabled())


class Steps:
    """A bar over a flow's named steps: `with steps.step("SFT"): ...` shows the step, then counts it."""

    def __init__(self, desc: str, total: int, leave: bool | None = None):
        self.bar = progress(desc=desc, total=total, leave=leave)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.bar.set_postfix_str(name)
        yield
        self.bar.update()

    def close(self) -> None:
        self.bar.set_postfix_str("done")
        self.bar.close()
