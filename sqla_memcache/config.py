"""Building a :class:`~sqla_memcache.Client` from configuration: server lists, serdes, URLs.

Pure functions, no I/O: :class:`~sqla_memcache.Client` calls
:func:`server_list` and :func:`check_serde` at construction, and
:meth:`Client.from_url <sqla_memcache.Client.from_url>` calls
:func:`parse_url`, so a mistake is a ``TypeError``/``ValueError`` naming the
argument, raised before any connection is attempted.

URL form (every query parameter is listed in :data:`URL_PARAMETERS`)::

    memcached://HOST[:PORT][,HOST[:PORT]...][?PARAM=VALUE&...]
    memcached://[::1]:11211                      IPv6 literal
    memcached:///run/memcached/memcached.sock    a unix socket (empty host, absolute path)
    memcacheds://...                             TLS (same as ?tls=true)
"""
from __future__ import annotations

import re
import socket
import ssl
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Tuple, Union
from urllib.parse import parse_qsl, unquote, urlsplit


ServerSpec = Union[str, Tuple[str, int]]

#: memcached's port when an address names none
DEFAULT_PORT = 11211

_UNIX = re.compile(r"^unix:(?P<path>.*)$")
_INET6 = re.compile(r"^(inet6:)?\[(?P<host>[^\[\]]+)\](:(?P<port>[0-9]+))?$")
_INET = re.compile(r"^(inet:)?(?P<host>[^:]+)(:(?P<port>[0-9]+))?$")


def parse_server(spec: Union[str, Tuple[str, int]]) -> Tuple[int, Any, int]:
    """``"host:port"``, ``("host:port", weight)``, ``"unix:/path"``,
    ``"inet6:[::1]:11211"`` or ``"[::1]:11211"`` -> (family, address, weight); the port
    defaults to 11211. The one parser of server addresses (the client, URLs, the CLI).
    Raises ValueError for anything else."""
    weight = 1
    if isinstance(spec, tuple):
        spec, weight = spec
    m = _UNIX.match(spec)
    if m:
        return socket.AF_UNIX, m.group("path"), weight
    m = _INET6.match(spec)
    if m:
        return socket.AF_INET6, (m.group("host"), int(m.group("port") or DEFAULT_PORT)), weight
    m = _INET.match(spec)
    if m:
        return socket.AF_INET, (m.group("host"), int(m.group("port") or DEFAULT_PORT)), weight
    raise ValueError("Unable to parse connection string: %r" % (spec,))


SCHEMES = ("memcached", "memcache", "memcacheds")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def server_list(servers: Any) -> List[ServerSpec]:
    """Validate the ``servers`` argument of ``Client``/``set_servers``; return it as a list.

    A single ``"host:port"`` string is taken as a one-server list (as
    pymemcache's ``Client`` and most users expect; iterating it character by
    character, as python-memcached does, can only fail).  A string naming
    several servers is refused: pass a list, or use ``Client.from_url``.

    Raises ``TypeError`` for anything but a string, a ``(spec, weight)`` tuple
    or an iterable of those, and ``ValueError`` for a malformed entry.
    """
    if isinstance(servers, str):
        if "," in servers or " " in servers.strip():
            raise ValueError(
                "servers=%r names several servers in one string: pass a list such as "
                "['h1:11211', 'h2:11211'], or use Client.from_url('memcached://h1:11211,h2:11211')" % (servers,)
            )
        servers = [servers]
    elif isinstance(servers, tuple) and len(servers) == 2 and isinstance(servers[0], str) \
            and isinstance(servers[1], int):
        servers = [servers]  # one ("host:port", weight) pair
    elif isinstance(servers, (bytes, bytearray)) or isinstance(servers, Mapping) \
            or not hasattr(servers, "__iter__"):
        raise TypeError(
            "servers must be a list of 'host:port' strings or ('host:port', weight) tuples, not %s"
            % type(servers).__name__
        )
    out: List[ServerSpec] = []
    for spec in servers:
        if isinstance(spec, tuple):
            if len(spec) != 2 or not isinstance(spec[0], str) or not isinstance(spec[1], int) \
                    or isinstance(spec[1], bool):
                raise TypeError("a weighted server must be ('host:port', weight: int), got %r" % (spec,))
            if spec[1] < 1:
                raise ValueError("server weight must be >= 1, got %r" % (spec,))
        elif not isinstance(spec, str):
            raise TypeError("each server must be a 'host:port' string or ('host:port', weight), got %r" % (spec,))
        elif not spec.strip():
            raise ValueError("empty server address in servers=%r" % (servers,))
        out.append(spec)
    return out


def check_serde(serde: Any) -> None:
    """Raise ``TypeError`` unless ``serde`` has callable ``serialize`` and ``deserialize``.

    A class passed where an instance is needed (``serde=JSONSerde``) gets its own
    message: its methods are callable but would be called without ``self``.
    """
    if isinstance(serde, type):
        raise TypeError("serde must be an instance, not the class %s: pass serde=%s()"
                        % (serde.__name__, serde.__name__))
    missing = [name for name in ("serialize", "deserialize") if not callable(getattr(serde, name, None))]
    if missing:
        raise TypeError(
            "serde %r lacks %s: a serde needs serialize(key: bytes, value) -> (bytes, flags) and "
            "deserialize(key: bytes, data: bytes, flags: int) -> value (see sqla_memcache.serde)"
            % (serde, " and ".join(missing))
        )


# --------------------------------------------------------------------------- URL


def _bool(name: str, text: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("%s=%r: expected one of true/false, 1/0, yes/no, on/off" % (name, text))


def _number(kind: Callable[[str], Any]) -> Callable[[str, str], Any]:
    def convert(name: str, text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError("%s=%r: expected a%s %s" % (
                name, text, "n" if kind is int else "", "integer" if kind is int else "number")) from None
        if value < 0:
            raise ValueError("%s=%r: must be >= 0" % (name, text))
        return value

    return convert


def _timeout(name: str, text: str) -> Any:
    if text.lower() in ("none", "never", ""):
        return None
    return _number(float)(name, text)


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def convert(name: str, text: str) -> str:
        if text not in allowed:
            raise ValueError("%s=%r: expected one of %s" % (name, text, ", ".join(allowed)))
        return text

    return convert


def _text(name: str, text: str) -> str:
    if not text:
        raise ValueError("%s must not be empty" % name)
    return text


class Parameter(NamedTuple):
    """One URL query parameter: the ``Client`` argument it sets, its parser and its meaning."""

    argument: str
    convert: Callable[[str, str], Any]
    meaning: str


#: Every query parameter ``Client.from_url`` accepts (docs/configuration.md lists the same).
URL_PARAMETERS: Dict[str, Parameter] = {
    "hashing": Parameter("hashing", _choice("modula", "ketama"), "server choice: modula (python-memcached's) or ketama"),
    "timeout": Parameter("socket_timeout", _timeout, "socket timeout in seconds (none: wait forever)"),
    "deadline": Parameter("deadline", _timeout, "seconds a whole call may take (none: the socket timeout)"),
    "dead_retry": Parameter("dead_retry", _number(float), "seconds a failed server is skipped"),
    "strict": Parameter("strict", _bool, "raise typed errors instead of quiet failure values"),
    "max_pool_size": Parameter("max_pool_size", _number(int), "idle connections kept per server"),
    "max_key_length": Parameter("server_max_key_length", _number(int), "longest key (0: no check)"),
    "max_value_length": Parameter("server_max_value_length", _number(int),
                                  "largest encoded value (0: no limit); memcached's -I"),
    "check_keys": Parameter("check_keys", _bool, "check key lengths"),
    "cache_cas": Parameter("cache_cas", _bool, "gets remembers CAS ids for cas"),
    "flush_on_reconnect": Parameter("flush_on_reconnect", lambda n, t: int(_bool(n, t)),
                                    "flush_all a server that comes back after being dead"),
    "debug": Parameter("debug", lambda n, t: int(_bool(n, t)), "python-memcached's MemCached: lines on stderr"),
    "pickle_protocol": Parameter("pickleProtocol", _number(int), "pickle protocol of the default serde"),
    "serde": Parameter("serde", _choice("pickle", "json", "raw"), "value encoding: pickle (default), json or raw"),
    "secret_key": Parameter("secret_key", _text, "sign values with HMAC-SHA256 under this key (SignedSerde)"),
    "tls": Parameter("ssl_context", _bool, "connect with TLS, verifying the server (memcacheds:// sets it)"),
    "tls_ca_file": Parameter("ssl_context", _text, "CA bundle that verifies the servers (implies tls)"),
}


def _servers_from(netloc: str, path: str) -> List[str]:
    if not netloc:
        if path.startswith("/") and len(path) > 1:
            return ["unix:" + unquote(path)]
        raise ValueError("a memcached URL needs servers: memcached://HOST:PORT[,HOST:PORT...] "
                         "or memcached:///path/to/socket")
    if path not in ("", "/"):
        raise ValueError("unexpected path %r in a memcached URL with servers (only a unix socket URL, "
                         "memcached:///path, has a path)" % path)
    servers = []
    for part in netloc.split(","):
        part = unquote(part.strip())
        if not part:
            raise ValueError("empty server in %r" % netloc)
        if "@" in part:
            raise ValueError("memcached URLs carry no user or password (%r); memcached's text protocol "
                             "has no login" % part)
        try:
            family, address, _weight = parse_server(part)  # the client's own parser
            if family == socket.AF_UNIX:
                raise ValueError(part)
        except ValueError:
            before, sep, port_text = part.rpartition(":")
            if sep and not port_text.isdigit() and (part.count(":") == 1 or before.endswith("]")):
                raise ValueError("malformed server %r: the port must be a number from 1 to 65535" % part) from None
            raise ValueError("malformed server %r: expected host:port (IPv6 as [address]:port)" % part) from None
        host, port = address
        _port_number(part, str(port))
        servers.append("inet6:[%s]:%d" % (host, port) if family == socket.AF_INET6 else "%s:%d" % (host, port))
    return servers


def _port_number(part: str, port: str) -> None:
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError("malformed server %r: the port must be a number from 1 to 65535" % part)


def parse_url(url: str) -> Tuple[List[str], Dict[str, Any]]:
    """Split a memcached URL into ``(servers, Client keyword arguments)``.

    Raises ``ValueError`` for another scheme, a malformed server, an unknown,
    repeated or invalid query parameter; ``TypeError`` when ``url`` is not a string.
    """
    if not isinstance(url, str):
        raise TypeError("url must be a string such as 'memcached://127.0.0.1:11211', not %s" % type(url).__name__)
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError("unsupported URL scheme %r in %r: use memcached:// (or memcacheds:// for TLS)"
                         % (parts.scheme, url))
    if parts.fragment:
        raise ValueError("unexpected #fragment in %r" % url)
    servers = _servers_from(parts.netloc, parts.path)
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ValueError("malformed query string in %r: %s" % (url, exc)) from None
    seen: Dict[str, str] = {}
    for name, value in pairs:
        if name not in URL_PARAMETERS:
            raise ValueError("unknown parameter %r in %r; known: %s" % (name, url, ", ".join(sorted(URL_PARAMETERS))))
        if name in seen:
            raise ValueError("parameter %r given twice in %r" % (name, url))
        seen[name] = value
    kwargs: Dict[str, Any] = {}
    for name, value in seen.items():
        if name in ("tls", "tls_ca_file"):
            continue
        param = URL_PARAMETERS[name]
        kwargs[param.argument] = param.convert(name, value)
    if "serde" in kwargs:
        kwargs["serde"] = _serde(kwargs["serde"], kwargs.get("pickleProtocol", 0))
    tls = parts.scheme == "memcacheds"
    if "tls" in seen:
        wanted = _bool("tls", seen["tls"])
        if tls and not wanted:
            raise ValueError("tls=%s contradicts the memcacheds:// scheme in %r" % (seen["tls"], url))
        tls = wanted
    if "tls_ca_file" in seen or tls:
        if "tls" in seen and not tls:
            raise ValueError("tls_ca_file given with tls=%s in %r" % (seen["tls"], url))
        kwargs["ssl_context"] = ssl.create_default_context(cafile=seen.get("tls_ca_file") or None)
    return servers, kwargs


def _serde(name: str, pickle_protocol: int) -> Any:
    from .serde import JSONSerde, PickleSerde, RawSerde

    if name == "json":
        return JSONSerde()
    if name == "raw":
        return RawSerde()
    return PickleSerde(pickle_protocol)


def merge_arguments(from_url: Mapping[str, Any], given: Mapping[str, Any]) -> Dict[str, Any]:
    """The URL's arguments updated with explicit keyword arguments; ``ValueError`` when both set one."""
    both = sorted(set(from_url) & set(given))
    if both:
        raise ValueError("%s set both in the URL and as keyword argument(s)" % ", ".join(both))
    merged = dict(from_url)
    merged.update(given)
    return merged

