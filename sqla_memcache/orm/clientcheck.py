"""Refuse, at ``ORMCache(client)``, a client the cache cannot drive.

The cache calls its client the python-memcached way (see :data:`REQUIRED`):
``get_multi(keys)`` returning a dict, ``set``/``add`` with ``time=`` and
``min_compress_len=`` keywords, ``incr(key)`` with a default delta, and
``delete(key)``. A client with other signatures -- pymemcache's
``set(key, value, expire=0, ...)`` and ``incr(key, value)`` -- would be
accepted by duck typing and then fail on every query, which the cache absorbs
as an outage: nothing would ever be cached. This check makes that a
``TypeError`` at construction; so is a client whose serde cannot store the
cache's entries, which are pickled bytes (``JSONSerde``): it would refuse
every one.

Methods whose signature Python cannot read (C extensions such as pylibmc's)
are accepted when they exist; pylibmc follows python-memcached's calls.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Tuple

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


#: what an entry looks like to the client's serde: pickled bytes (``store.py``)
_PROBE_KEY, _PROBE_VALUE = b"sqla_memcache:serde-check", b"\x80\x05entry\x00\xff"


def _serde_problem(client: Any) -> Optional[str]:
    """Why the client's serde (``client.serde``, as :class:`sqla_memcache.Client` and ``AsyncClient``
    have) cannot store the cache's entries, which are bytes; None when it can or there is none."""
    serde = getattr(client, "serde", None)
    if serde is None or not callable(getattr(serde, "serialize", None)):
        return None  # python-memcached, pylibmc: they store bytes as they are
    try:
        data, flags = serde.serialize(_PROBE_KEY, _PROBE_VALUE)
        back = serde.deserialize(_PROBE_KEY, data, flags)
    except Exception as exc:  # whatever the serde raises: it cannot hold an entry
        return "its serde %s cannot store bytes (%s: %s)" % (type(serde).__name__, type(exc).__name__, exc)
    if back != _PROBE_VALUE:
        return "its serde %s does not give bytes back as they were stored" % type(serde).__name__
    return None


def _public_name(cls: type) -> str:
    """``sqla_memcache.Client`` for the package's own classes, else ``module.QualifiedName``."""
    import sqla_memcache

    if getattr(sqla_memcache, cls.__name__, None) is cls:
        return "sqla_memcache." + cls.__name__
    return "%s.%s" % (cls.__module__, cls.__qualname__)


def check_client(client: Any, async_client: Any = None) -> None:
    """Raise ``TypeError`` naming what is missing unless ``client`` (and ``async_client``, when
    given) can serve an :class:`ORMCache`: the python-memcached calls, and a serde that stores bytes."""
    for one in (client, async_client) if async_client is not None else (client,):
        if isinstance(one, type):
            raise TypeError("ORMCache needs a client instance, not the class %s" % one.__name__)
        if isinstance(one, (str, list, tuple)):
            raise TypeError("ORMCache needs a memcached client, not the server list %r: pass "
                            "ORMCache(Client(servers)), or build it with ORMCache.from_config("
                            "{'sqla_memcache.url': 'memcached://host:11211'})" % (one,))
        problems = _problems(one)
        serde = _serde_problem(one) if not problems else None
        if serde is not None:
            raise TypeError("ORMCache cannot use %s: %s; the cache stores entries as pickled bytes: use "
                            "the default PickleSerde, SignedSerde (secret_key=) or RawSerde" % (
                                _public_name(type(one)), serde))
        if problems:
            raise TypeError("ORMCache cannot use %s: %s. It needs %s." % (
                _public_name(type(one)), "; ".join(problems), _NEEDED))
