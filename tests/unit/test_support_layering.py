"""``tests/support`` is the bottom layer of the test suite: test modules import it, never the reverse.

Parsed from the source, as ``test_layering.py`` does for the package: a support
module imports the standard library, third-party packages, ``sqla_memcache`` and
other support modules, never a test module, a conftest or a test directory's own
helpers; and the modules the fixtures use to start, probe and empty servers never
import the client under test (only ``support.clients`` does).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

TESTS = Path(__file__).resolve().parents[1]
SUPPORT = TESTS / "support"
#: support modules that may build clients of the package under test
CLIENT_USERS = {"clients"}
CLIENT_MODULES = ("sqla_memcache.client", "sqla_memcache.async_client", "sqla_memcache.aio", "sqla_memcache.orm")
CLIENT_NAMES = {"sqla_memcache.Client", "sqla_memcache.AsyncClient", "sqla_memcache.ORMCache"}


def _is_client(name: str) -> bool:
    return name.startswith(CLIENT_MODULES) or name in CLIENT_NAMES


def _imports(path: Path) -> Set[str]:
    """Dotted names imported by ``path``: ``from a import b`` gives ``a`` and ``a.b``; relative ones under ``support``."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = ("support." + (node.module or "")).rstrip(".") if node.level else (node.module or "")
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _support_imports() -> Dict[str, Set[str]]:
    return {path.stem: _imports(path) for path in sorted(SUPPORT.glob("*.py"))}


def _test_tree_names() -> Set[str]:
    """Top-level names a module of the test tree (outside support) can be imported as."""
    names = {path.stem for path in TESTS.rglob("*.py") if SUPPORT not in path.parents}
    names |= {path.name for path in TESTS.iterdir() if path.is_dir() and path != SUPPORT}
    return names - {"__init__"}


def test_support_never_imports_the_test_tree():
    tree = _test_tree_names()
    assert "conftest" in tree and "fault_models" in tree  # the scan sees the test tree
    upward = {module: sorted(name for name in names if name.split(".")[0] in tree)
              for module, names in _support_imports().items()}
    assert {module: names for module, names in upward.items() if names} == {}


def test_server_helpers_never_import_the_client_under_test():
    imports = _support_imports()
    assert set(imports) >= {"raw", "memcached", "tls", "databases", "sql", "threads", "clients"}
    assert any(_is_client(name) for name in imports["clients"])  # the check can see a client import
    offenders = {module: sorted(name for name in names if _is_client(name))
                 for module, names in imports.items() if module not in CLIENT_USERS}
    assert {module: names for module, names in offenders.items() if names} == {}
