"""The public API is what ``__all__`` exports, and ``docs/api.md`` lists exactly that."""
from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Dict, List

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
MODULES = ["sqla_memcache", "sqla_memcache.orm", "sqla_memcache.errors", "sqla_memcache.testing"]


def documented() -> Dict[str, List[str]]:
    """Module -> the names in the first column of its table in docs/api.md."""
    found: Dict[str, List[str]] = {}
    module = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"^## `([\w.]+)`", line)
        if heading:
            module = heading.group(1)
            found[module] = []
            continue
        row = re.match(r"^\| `(\w+)` \|", line)
        if row and module is not None:
            found[module].append(row.group(1))
    return found


def test_every_module_of_the_reference_is_documented() -> None:
    assert sorted(documented()) == sorted(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docs_list_exactly_what_all_exports(name: str) -> None:
    module = importlib.import_module(name)
    assert documented()[name] == list(module.__all__)  # same names, same order
    for exported in module.__all__:
        assert hasattr(module, exported), "%s.__all__ names %s, which it does not define" % (name, exported)

