"""Refuse, at ``ORMCache(client)``, a client the cache cannot drive.

The cache calls its client the python-memcached way (see :data:`REQUIRED`):
``get_multi(keys)`` returning a dict, ``set``/``add`` with ``time=`` and
``min_compress_len=`` keywords, ``incr(key)`` with a default delta, and
``delete(key)``. A client with other signatures -- pymemcache's
``set(key, value, expire=0, ...)`` and ``incr(key, value)`` -- would be
accepted by duck typing and then fail on every query, which the cache absorbs
as an outage: nothing would ever be cached. This check makes that a
``TypeError`` at construction.

Methods whose signature Python cannot read (C extensions such as pylibmc's)
are accepted when they exist; pylibmc follows python-memcached's calls.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Tuple

#: method -> (positional arguments, keyword arguments) of a call the cache makes
REQUIRED: Dict[str, Tuple[Tuple[Any, ...], Dict[str, Any]]] = {
    "get_multi": ((["k"],), {}),
    "set": (("k", b"v"), {"time": 0, "min_compress_len": 0}),
    "add": (("k", 1), {"time": 0}),
    "incr": (("k",), {}),
    "delete": (("k",), {}),
}

_NEEDED = (
    "a python-memcached compatible client (sqla_memcache.Client, python-memcached's memcache.Client "
    "or pylibmc.Client) with get_multi(keys), set(key, value, time=0, min_compress_len=0), "
    "add(key, value, time=0), incr(key, delta=1) and delete(key)"
)


def _plain(signature: inspect.Signature) -> inspect.Signature:
    """``signature`` without annotations, as a reader compares it with python-memcached's."""
    empty = inspect.Parameter.empty
    return signature.replace(parameters=[p.replace(annotation=empty) for p in signature.parameters.values()],
                             return_annotation=inspect.Signature.empty)


def _problems(client: Any) -> List[str]:
    problems = []
    for name, (args, kwargs) in REQUIRED.items():
        method = getattr(client, name, None)
        if not callable(method):
            problems.append("no %s()" % name)
            continue
        try:
            signature = inspect.signature(method)
        except (TypeError, ValueError):  # a builtin without a readable signature: trust it
            continue
        try:
            signature.bind(*args, **kwargs)
        except TypeError:
            call = ", ".join([repr(a) for a in args] + ["%s=%r" % item for item in kwargs.items()])
            problems.append("%s%s cannot be called as %s(%s)" % (name, _plain(signature), name, call))
    return problems


def check_client(client: Any) -> None:
    """Raise ``TypeError`` naming what is missing unless ``client`` can serve an :class:`ORMCache`."""
    if isinstance(client, type):
        raise TypeError("ORMCache needs a client instance, not the class %s" % client.__name__)
    problems = _problems(client)
    if problems:
        raise TypeError("ORMCache cannot use %s.%s: %s. It needs %s." % (
            type(client).__module__, type(client).__qualname__, "; ".join(problems), _NEEDED))
