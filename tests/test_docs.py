"""The guides' Python examples run as written (one namespace per guide, in order)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("guide", ["engine.md"])
def test_guide_examples_run(guide: str) -> None:
    blocks = python_blocks((DOCS / guide).read_text())
    assert len(blocks) >= 5
    namespace: dict[str, object] = {"__name__": f"docs_{guide}"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{guide}#block{i + 1}", "exec"), namespace)
        except Exception as exc:  # noqa: BLE001 - re-raised with the block's number
            raise AssertionError(f"{guide} example {i + 1} failed: {exc!r}\n{block}") from exc
