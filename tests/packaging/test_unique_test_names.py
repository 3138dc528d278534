"""Test folders have no __init__.py, so pytest imports test modules by their file name: two
test files with the same name anywhere under tests/ or e2e/ stop the whole run at collection
("import file mismatch"). Caught here, with the names, rather than by a red CI run."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_two_test_modules_share_a_file_name() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for folder in ("tests", "e2e"):
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts and path.name != "conftest.py":
                seen[path.name].append(str(path.relative_to(ROOT)))
    shared = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not shared, f"rename one of each: {shared}"
