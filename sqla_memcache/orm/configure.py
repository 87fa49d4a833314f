"""``ORMCache.from_config``: an ORMCache from a flat settings mapping (dogpile.cache's style).

As dogpile.cache's ``configure_from_config``, the settings are a flat mapping,
often read from an ini file, whose keys under a prefix configure the cache::

    sqla_memcache.url = memcached://h1:11211,h2:11211?hashing=ketama&timeout=1
    sqla_memcache.namespace = myapp
    sqla_memcache.expire = 300

``url`` is the client's (see ``Client.from_url``). ``async_client = true``
also builds an ``AsyncClient`` from the same URL (same servers, hashing,
serde, timeouts, TLS; ``max_pool_size`` is its ``pool_size``), so one cache
serves ``Session`` and ``AsyncSession`` without blocking the event loop (see
``aio.py``). Every other key names an ``ORMCache`` constructor argument. String values (as ini files give them) are
converted to the type of the argument's default. Keys outside the prefix are
ignored, so the mapping can hold the rest of an application's settings; an
unknown key under the prefix is a ``ValueError``, so a typo is not silently
dropped.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Mapping, Optional

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default`` when it is a string from a settings file."""
    if not isinstance(value, str) or default is None or isinstance(default, str):
        return value
    text = value.strip()
    try:
        if isinstance(default, bool):
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError("expected one of true/false, 1/0, yes/no, on/off")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError as exc:
        raise ValueError("setting %r=%r: %s" % (name, value, exc)) from None
    return value


def from_config(cls: Any, mapping: Mapping[str, Any], prefix: str = "sqla_memcache.",
                client: Optional[Any] = None, async_client: Optional[Any] = None) -> Any:
    """Build ``cls`` (an :class:`ORMCache`) from the keys of ``mapping`` starting with ``prefix``.

    ``<prefix>url`` makes the client with ``Client.from_url``; pass ``client=``
    instead to use one you built (then ``url`` must be absent). A true
    ``<prefix>async_client`` adds ``AsyncClient.from_url`` of the same URL;
    pass ``async_client=`` instead to use an ``AsyncClient`` you built. Raises
    ``ValueError`` for a missing or doubled client, an unknown key under the
    prefix or a value that does not convert, and what ``Client.from_url`` and
    ``ORMCache`` raise.
    """
    settings = {key[len(prefix):]: value for key, value in mapping.items()
                if isinstance(key, str) and key.startswith(prefix)}
    parameters = inspect.signature(cls.__init__).parameters
    known = {name: p for name, p in parameters.items()
             if name not in ("self", "client", "async_client") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = sorted(set(settings) - set(known) - {"url", "async_client"})
    if unknown:
        raise ValueError("unknown setting(s) %s; known under %r: %s" % (
            ", ".join(prefix + name for name in unknown), prefix,
            ", ".join(["url", "async_client"] + sorted(known))))
    url = settings.pop("url", None)
    wants_async = _convert(prefix + "async_client", settings.pop("async_client", False), False)
    if not isinstance(wants_async, bool):
        raise ValueError("setting %r=%r: expected true or false" % (prefix + "async_client", wants_async))
    if client is None and url is None:
        raise ValueError("settings have no %surl (e.g. memcached://127.0.0.1:11211) and no client= was passed"
                         % prefix)
    if client is not None and url is not None:
        raise ValueError("both client= and %surl given: pass one" % prefix)
    if wants_async and async_client is not None:
        raise ValueError("both async_client= and %sasync_client given: pass one" % prefix)
    if wants_async and url is None:
        raise ValueError("%sasync_client = true builds the AsyncClient from %surl; with client= pass "
                         "async_client= too" % (prefix, prefix))
    if client is None:
        from ..client import Client

        client = Client.from_url(str(url))
    if wants_async:
        from ..aio import AsyncClient

        async_client = AsyncClient.from_url(str(url))
    kwargs: Dict[str, Any] = {
        name: _convert(prefix + name, value, known[name].default if known[name].default is not inspect.Parameter.empty
                       else None)
        for name, value in settings.items()
    }
    if async_client is not None:
        kwargs["async_client"] = async_client
    return cls(client, **kwargs)
