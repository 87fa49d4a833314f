"""The package's imports point one way: no cycles, no upward imports, a pure protocol layer.

Parsed from the source (every import statement, also inside functions; those
under ``if TYPE_CHECKING:`` only name types and are left out).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[2] / "sqla_memcache"

#: module prefixes of the client side: they never import the ORM, the demo or the CLI
CLIENT_SIDE = ("errors", "protocol", "hashing", "serde", "connection", "client", "config", "memo", "textfmt",
               "memcached_process", "aio", "async_client", "transport", "routing", "mdict", "dump")
#: modules that must stay free of I/O
_IO = {"socket", "ssl", "asyncio", "select"}
PURE = {"protocol": _IO | {"sqla_memcache.transport", "sqla_memcache.client", "sqla_memcache.routing"},
        "hashing": _IO | {"sqla_memcache.protocol", "sqla_memcache.connection", "sqla_memcache.transport"},
        "routing": _IO | {"sqla_memcache.transport", "sqla_memcache.connection", "sqla_memcache.client",
                          "sqla_memcache.aio"},
        "client.keys": _IO | {"sqla_memcache.transport", "sqla_memcache.aio"},
        "client.commands": _IO | {"sqla_memcache.transport", "sqla_memcache.aio"},
        "client.base": _IO | {"sqla_memcache.transport", "sqla_memcache.aio"},
        "orm.sqltext": {"sqlalchemy", "socket"}, "orm.api": {"sqlalchemy", "sqla_memcache"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> Set[str]:
    """Absolute names imported by the module at ``path`` (package-internal ones relative to the package)."""
    name = _module_name(path)
    is_package = path.name == "__init__.py"
    here = name.split(".") if name else []
    base = here if is_package else here[:-1]
    found: Set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    anchor = base[: len(base) - (child.level - 1)] if child.level > 1 else base
                    target = ".".join(anchor + ([child.module] if child.module else []))
                    prefix = "sqla_memcache" + ("." + target if target else "")
                    names_only_submodules = True
                    for alias in child.names:  # "from . import keys" imports a submodule
                        candidate = prefix + "." + alias.name
                        if _known(candidate):
                            found.add(candidate)
                        else:
                            names_only_submodules = False
                    if not names_only_submodules:
                        found.add(prefix)
                else:
                    found.add(child.module or "")
                    for alias in child.names:
                        candidate = "%s.%s" % (child.module, alias.name)
                        if _known(candidate):
                            found.add(candidate)
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return found


def _known(dotted: str) -> bool:
    if not dotted.startswith("sqla_memcache"):
        return False
    rel = dotted[len("sqla_memcache"):].lstrip(".").replace(".", "/")
    return (PACKAGE / (rel + ".py")).exists() or (PACKAGE / rel / "__init__.py").exists()


def graph() -> Dict[str, Set[str]]:
    out: Dict[str, Set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        out[name] = {imp[len("sqla_memcache"):].lstrip(".") for imp in _imports(path)
                     if imp.startswith("sqla_memcache") and _known(imp)} - {name}
    return out


def test_no_import_cycles():
    edges = graph()
    cycles: List[List[str]] = []
    state: Dict[str, int] = {}
    stack: List[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt == "":  # the package root re-exports; importing it is not a layer edge
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            dfs(node)
    assert cycles == []


def test_client_side_never_imports_the_orm_demo_or_cli():
    bad = {}
    for name, targets in graph().items():
        if name.split(".")[0] in CLIENT_SIDE:
            upward = sorted(t for t in targets if t.split(".")[0] in ("orm", "demo", "cli", ""))
            if upward:
                bad[name] = upward
    assert bad == {}


def test_the_orm_never_imports_the_demo_or_cli():
    bad = {name: sorted(t for t in targets if t.split(".")[0] in ("demo", "cli"))
           for name, targets in graph().items() if name.startswith("orm")}
    assert {k: v for k, v in bad.items() if v} == {}


def _paths(name: str) -> List[Path]:
    """The source files of module or package *name* (a package: every module in it)."""
    base = PACKAGE / name.replace(".", "/")
    if base.is_dir():
        return sorted(base.rglob("*.py"))
    return [base.with_suffix(".py")]


def test_pure_modules_do_no_io():
    for name, forbidden in PURE.items():
        paths = _paths(name)
        assert paths and all(p.exists() for p in paths), name
        for path in paths:
            imported = _imports(path)
            hits = sorted(i for i in imported if any(i == f or i.startswith(f + ".") for f in forbidden))
            assert hits == [], (str(path.relative_to(PACKAGE)), hits)


def test_the_graph_is_not_empty():  # the parser finds the edges it should
    edges = graph()
    assert "orm.store" in edges["orm.cache"] and "protocol" in edges["client.commands"] and "orm.api" in edges["orm.loader"]
    assert "transport.host" in edges["client.client"] and "client.commands" in edges["aio.client"]


#: The client side's layers, lowest first: a module imports only from its own layer or below.
LAYERS = [
    {"errors", "memo", "textfmt"},
    {"protocol", "hashing", "serde", "config"},
    {"routing", "transport", "connection"},
    {"client"},
    {"aio"},
    {"mdict", "dump"},
]


def _layer(name: str) -> int:
    top = name.split(".")[0]
    return next((i for i, layer in enumerate(LAYERS) if top in layer), -1)


def test_client_layers_only_import_downwards():
    bad = {}
    for name, targets in graph().items():
        here = _layer(name)
        if here < 0:
            continue
        up = sorted(t for t in targets if _layer(t) > here)
        if up:
            bad[name] = up
    assert bad == {}
