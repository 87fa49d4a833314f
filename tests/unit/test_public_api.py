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



def test_errors_are_defined_in_errors_only() -> None:
    """One error tree: every exception class of the package is defined in errors.py (others alias it)."""
    import pkgutil

    import sqla_memcache
    from sqla_memcache import errors

    strays = []
    for info in pkgutil.walk_packages(sqla_memcache.__path__, "sqla_memcache."):
        if info.name.startswith(("sqla_memcache.demo", "sqla_memcache.__main__")) or info.name == errors.__name__:
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == info.name:
                strays.append("%s.%s" % (info.name, value.__name__))
    assert strays == []
    assert len([v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, BaseException)
                and v.__module__ == errors.__name__]) >= 20
