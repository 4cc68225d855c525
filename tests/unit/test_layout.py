"""Guards for the project's layout and entry points, which other files refer to."""

from __future__ import annotations

import operator
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_operator_is_still_the_standard_library() -> None:
    assert hasattr(operator, "itemgetter")
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "operator" / "src" / "__init__.py").exists()


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None and text.index("```bash") < 40
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci
