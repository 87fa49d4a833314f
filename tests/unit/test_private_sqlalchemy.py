"""Private SQLAlchemy APIs are reached through ``sqla_memcache/orm/_compat.py`` only.

Parsed from the source: a private attribute (``x._name``, or ``getattr(x,
"_name")``) that the package itself never defines can only be SQLAlchemy's (or
another library's), so outside ``_compat`` it is an error; so is importing one
of SQLAlchemy's private modules. ``tests/unit/test_sqla_compat.py`` then checks
each name ``_compat`` wraps against the installed SQLAlchemy.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[2] / "sqla_memcache"
COMPAT = PACKAGE / "orm" / "_compat.py"

#: SQLAlchemy modules outside its documented API (their contents change between releases)
PRIVATE_MODULES = (
    "sqlalchemy.orm.base", "sqlalchemy.orm.context", "sqlalchemy.orm.path_registry", "sqlalchemy.orm.mapperlib",
    "sqlalchemy.orm.state", "sqlalchemy.orm.instrumentation", "sqlalchemy.orm.strategy_options",
    "sqlalchemy.orm.collections", "sqlalchemy.util.concurrency", "sqlalchemy.util._collections",
)

#: private names of the standard library the package may use
STDLIB_PRIVATE = {"_mapping", "_exit", "_getframe", "_replace", "_asdict", "_fields", "_make", "_field_defaults"}


def _sources() -> Iterator[Tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), str(path))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined_names() -> Set[str]:
    """Every private name the package defines: functions, classes, attributes it assigns, slots, aliases."""
    names: Set[str] = set()
    for _path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[0])
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr" and len(node.args) > 1:
                if isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                    names.add(node.args[1].value)
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__slots__" for t in node.targets):
                names.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant))
    for path in PACKAGE.rglob("*.py"):
        names.add(path.stem)
    return {name for name in names if isinstance(name, str) and _private(name)}


def _uses(tree: ast.Module) -> Iterator[Tuple[int, str]]:
    """``(line, name)`` of every private attribute read, by ``.name`` or ``getattr(x, "name")``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            yield node.lineno, node.attr
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr"):
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                if _private(node.args[1].value):
                    yield node.lineno, node.args[1].value
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("_sa_"):
            yield node.lineno, node.value


def _imported_modules(tree: ast.Module) -> Iterator[Tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, node.module + "." + alias.name


def offenders() -> List[str]:
    own = _defined_names() - {"_sa_instance_state", "_sa_class_manager"}
    found = []
    for path, tree in _sources():
        if path == COMPAT:
            continue
        where = path.relative_to(PACKAGE.parent)
        for line, name in _uses(tree):
            if name not in own and name not in STDLIB_PRIVATE:
                found.append("%s:%d: %s" % (where, line, name))
        for line, module in _imported_modules(tree):
            if module.startswith(PRIVATE_MODULES):
                found.append("%s:%d: import %s" % (where, line, module))
    return found


def test_private_sqlalchemy_apis_are_reached_through_compat_only() -> None:
    assert offenders() == []


def test_the_check_sees_a_private_sqlalchemy_attribute() -> None:
    """The check is not vacuous: the uses ``_compat`` wraps would each be reported elsewhere."""
    tree = ast.parse(COMPAT.read_text())
    own = _defined_names() - {"_sa_instance_state", "_sa_class_manager"}
    wrapped = {name for _line, name in _uses(tree)} - own - STDLIB_PRIVATE
    assert {"_generate_cache_key", "_commit_all_states", "_sa_class_manager", "_propagate_attrs", "_get_clause"} <= wrapped
    imports = {module for _line, module in _imported_modules(tree) if module.startswith(PRIVATE_MODULES)}
    assert "sqlalchemy.orm.context" in imports and "sqlalchemy.util.concurrency" in imports
