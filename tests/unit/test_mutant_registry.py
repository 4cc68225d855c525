"""tests/mutants.toml, read as scripts/mutants.py reads it, is fit to run.

A stale entry (its text edited away, or made ambiguous) only showed when CI's
mutant step ran at the end of a 20-minute run; here it fails in a second.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "scripts" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutants", module)
    spec.loader.exec_module(module)
    return module


mutants = _runner()
ENTRIES = mutants.load(mutants.REGISTRY)


def test_every_entry_has_a_unique_name() -> None:
    names = [m.name for m in ENTRIES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("m", ENTRIES, ids=[m.name for m in ENTRIES])
def test_each_entry_finds_its_text_once_and_names_existing_tests(m: Any) -> None:
    count = (ROOT / m.file).read_text(encoding="utf-8").count(m.find)
    assert count == 1, f"{m.file}: the text to break occurs {count} times"
    assert m.find != m.replace
    for node in m.tests:
        path, _, name = node.partition("::")
        source = (ROOT / path).read_text(encoding="utf-8")
        if name:
            function = name.split("[")[0].split("::")[-1]
            assert f"def {function}(" in source, f"{node}: no such test"


def test_a_copy_holds_the_sources_and_tests_but_no_venv_or_vcs(tmp_path: Path) -> None:
    root = mutants.copy_tree(tmp_path)
    assert (root / "tests" / "mutants.toml").is_file()
    assert (root / "operator" / "src" / "coordshard_operator" / "__init__.py").is_file()
    assert not (root / ".git").exists() and not (root / ".venv").exists()
