"""The commands, once for both clients: what to send, which parser reads the reply, what to return.

No I/O here.  A one-key command is a *plan* -- a tuple
``(key, hash key, request, parser, finish, context, missing, failure)``:

* ``request`` and ``parser`` go to the key's server (``parser`` None: ``noreply``);
* ``finish(server, reply, context)`` turns the parsed reply into the result;
* ``missing`` is returned when no server is usable, ``failure`` when the
  exchange fails (both through the strict policy: typed errors when strict);
* a plan whose ``request`` is None is already decided: ``failure`` is the result.

A many-key command is a *batch plan* ``(keys, key prefix, command, unplaced, collect)``:
``command(server, {wire key: key})`` gives one server's ``(request, parser,
context)`` (or None: nothing to send), and ``collect([(context, reply)])`` the
result (a reply is :data:`FAILED` when that server's exchange failed).
Keys with no usable server are appended to ``unplaced`` when it is a list.

Each client runs plans with its own transport -- ``Client._one`` /
``Client._per_server`` block, ``AsyncClient``'s await -- and every public
method is ``run(plan)``, so the blocking and the asyncio client cannot drift apart.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from ..errors import MemcachedKeyError, MemcacheError, ProtocolError, SerializationError, ValueTooLargeError
from ..protocol import (
    ALL_STORED,
    CLIENT_ERROR,
    DELETED,
    NOT_FOUND,
    SERVER_ERROR,
    STORE_REPLIES,
    STORED,
    TOUCHED,
    ItemTuple,
    RetrievalReply,
    arith_command,
    delete_command,
    delete_many_command,
    gets_command,
    lines_reply,
    parse_arith_reply,
    raise_for_error_line,
    read_arith_line,
    read_delete_line,
    read_store_line,
    read_touch_line,
    retrieval_command,
    simple_command,
    storage_command,
    store_lines_reply,
    touch_command,
    valid_delete_line,
)
from ..serde import FLAG_INTEGER, decode_integer
from .base import ClientBase, Key, log
from .keys import SMALL_BATCH, prefix_bytes

Plan = Tuple[Any, Any, Optional[bytes], Any, Any, Any, Any, Any]
BatchPlan = Tuple[List[Any], bytes, Callable[[Any, Dict[bytes, Any]], Any], Optional[List[Any]], Callable[[List[Tuple[Any, Any]]], Any]]


class _Failed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "FAILED"


#: A server's reply in a batch when its exchange failed.
FAILED = _Failed()


def decode_counter(item: ItemTuple) -> int:
    """A counter's value; SerializationError for anything ``incr`` could not count."""
    _, flags, data, _ = item
    if flags not in (0, FLAG_INTEGER):
        raise SerializationError("not a counter: flags %d" % flags)
    return decode_integer(data)


def _sent(host: Any, reply: Any, ctx: Any) -> bool:
    return True  # a noreply command was written: python-memcached's True


def _sent_one(host: Any, reply: Any, ctx: Any) -> int:
    return 1


def _nothing(host: Any, reply: Any, ctx: Any) -> None:
    return None


class Commands(ClientBase):
    """Plans of every command (see the module docstring); mixed into both clients."""

    # -- retrieval ------------------------------------------------------------
    def _get_plan(self, key: Key, default: Any) -> Plan:
        hashkey, wire, request, parse = self._keys.lookup(key) if key.__class__ is str else self._keys.looked(key)
        return key, hashkey, request, parse, self._got, default, default, default

    def _got(self, host: Any, items: List[ItemTuple], default: Any) -> Any:
        """What ``get`` returns: the value, or *default* on a miss or when it does not decode."""
        if not items:
            return default
        (item,) = items  # the parser allows one block per requested key
        try:
            return self._decode_value(item)
        except SerializationError as exc:
            key = item[0]
            self.debuglog("could not decode value of %r: %s" % (key, exc))
            log.warning("could not decode value of %r: %s", key, exc)
            return self._fail(exc, default)

    def _gets_plan(self, key: Key, default: Any) -> Plan:
        """A plan whose result is ``(value, cas id, wire key)``."""
        hashkey, wire = self._keys.encode(key)
        parse = RetrievalReply((wire,), self.server_max_value_length)
        nothing = (default, None, wire)
        return key, hashkey, gets_command(wire), parse, self._got_cas, nothing, nothing, nothing

    def _got_cas(self, host: Any, items: List[ItemTuple], nothing: Tuple[Any, None, bytes]) -> Tuple[Any, Optional[int], bytes]:
        if not items:
            return nothing
        (item,) = items
        _, _, _, cas = item
        return self._got(host, items, nothing[0]), cas, nothing[2]

    def _remember_cas(self, found: Tuple[Any, Optional[int], bytes]) -> Any:
        """``gets``: remember the CAS id (``cache_cas``), return the value."""
        value, cas_id, wire = found
        if cas_id is not None and self.cache_cas:
            # python-memcached keys the remembered ids by the encoded key.
            self.cas_ids[wire] = cas_id
        return value

    def _get_multi_plan(self, keys: Iterable[Any], key_prefix: Union[str, bytes],
                        decode: Optional[Callable[[ItemTuple], Any]] = None) -> BatchPlan:
        """get_multi with *decode* for each item (default: the serde's, :meth:`_decode_value`)."""
        max_size = self.server_max_value_length
        result: Dict[Any, Any] = {}

        def command(host: Any, wires: Dict[bytes, Any]) -> Tuple[bytes, Any, Dict[bytes, Any]]:
            return retrieval_command(b"get", list(wires)), RetrievalReply(wires, max_size), wires

        def collect(replies: List[Tuple[Dict[bytes, Any], Any]]) -> Dict[Any, Any]:
            for wires, items in replies:
                if items is not FAILED:
                    self._collect(result, self._keys.reported(wires), items, decode)
            return result

        return _listed(keys), prefix_bytes(key_prefix), command, None, collect

    def _few_plan(self, keys: Iterable[Any], key_prefix: Union[str, bytes],
                  decode: Optional[Callable[[ItemTuple], Any]] = None) -> Optional[Plan]:
        """A ``get_multi`` of a few ``str`` keys to a one-server list as a one-key plan
        (one request, no grouping by server; the result as :meth:`_get_multi_plan`'s),
        or None when the batch is not that (then the batch plan runs)."""
        keys_ = self._keys
        if (key_prefix or keys.__class__ is not list or self._router.single is None
                or not 0 < len(keys) <= SMALL_BATCH or keys_.key_encoder is not None):  # type: ignore[arg-type]
            return None
        try:
            wires, request, parse, decoded = keys_.few(tuple(keys))  # type: ignore[arg-type]
        except (MemcachedKeyError, TypeError):  # a key not a str, or refused: the batch plan, for the precise error
            return None
        ctx = wires, decode, decoded
        return keys, None, request, parse, self._got_few, ctx, {}, {}  # (one server: no hash key)

    def _got_few(self, host: Any, items: List[ItemTuple],
                 ctx: Tuple[Dict[bytes, Any], Optional[Callable[[ItemTuple], Any]], List[Any]]) -> Dict[Any, Any]:
        result: Dict[Any, Any] = {}
        if items:
            wires, decode, decoded = ctx
            counters = decode is decode_counter
            if counters:
                # Counters are a pure function of the reply: the parser's very tuple
                # again (the same reply bytes) gives the same ones.
                last = decoded[0]
                if last is not None and last[0] is items:
                    return dict(last[1])
            self._collect(result, wires, items, decode)
            if counters and items.__class__ is tuple and len(result) == len(items):  # (every value a counter)
                decoded[0] = (items, dict(result))
        return result

    def _counters_plan(self, keys: Iterable[Any], key_prefix: Union[str, bytes]) -> BatchPlan:
        return self._get_multi_plan(keys, key_prefix, decode_counter)

    # -- storage ----------------------------------------------------------------
    def _store_plan(self, cmd: bytes, key: Key, val: Any, time: int, min_compress_len: int, noreply: bool,
                    cas_id: Optional[int] = None) -> Plan:
        hashkey, wire, _, _ = self._keys.lookup(key) if key.__class__ is str else self._keys.looked(key)
        try:
            data, flags = self._encode_value(wire, val, min_compress_len)
        except (ValueTooLargeError, SerializationError) as exc:
            self.debuglog(str(exc))
            log.info("not stored: %s", exc)
            return key, hashkey, None, None, None, None, 0, self._fail(exc, 0)
        command = storage_command(cmd, wire, flags, time, data, cas_id, noreply)
        if noreply:
            return key, hashkey, command, None, _sent, None, 0, False
        return key, hashkey, command, read_store_line, self._stored, cmd, 0, 0

    def _cas_plan(self, key: Key, val: Any, time: int, min_compress_len: int, noreply: bool,
                  cas_id: Optional[int]) -> Plan:
        if cas_id is None:
            cas_id = self.cas_ids.get(self._keys.encode(key)[1]) if self.cache_cas else None
            if cas_id is None:
                return self._store_plan(b"set", key, val, time, min_compress_len, noreply)
        return self._store_plan(b"cas", key, val, time, min_compress_len, noreply, cas_id)

    def _stored(self, host: Any, line: bytes, cmd: bytes) -> Any:
        """What a storage command returns for its reply *line*."""
        if line == STORED:
            return True
        if line.startswith(SERVER_ERROR):
            # e.g. "object too large for cache": memcached swallowed the data,
            # so the connection is still in step.  python-memcached's debug line:
            self.debuglog("while expecting 'STORED', got unexpected response '%s'" % line.decode("utf-8", "replace"))
            try:
                raise_for_error_line(line)
            except MemcacheError as exc:
                return self._fail(exc, False)
        if line not in STORE_REPLIES:
            return self._fail(ProtocolError("unexpected reply to %s: %r" % (cmd.decode(), line[:100])), False)
        return False

    def _set_multi_plan(self, mapping: Mapping[Any, Any], time: int, key_prefix: Union[str, bytes],
                        min_compress_len: int, noreply: bool) -> BatchPlan:
        """Returns the keys NOT stored: unstorable values, then keys with no server, then refused ones."""
        refused: List[Any] = []
        unplaced: List[Any] = []

        def command(host: Any, wires: Dict[bytes, Any]) -> Optional[Tuple[bytes, Any, List[Any]]]:
            cmds, origs = [], []
            for wire, orig in wires.items():
                try:
                    data, flags = self._encode_value(wire, mapping[orig], min_compress_len)
                except (ValueTooLargeError, SerializationError) as exc:
                    self.debuglog(str(exc))
                    if self.strict:
                        raise
                    refused.append(orig)
                    continue
                cmds.append(storage_command(b"set", wire, flags, time, data, None, noreply))
                origs.append(orig)
            if not cmds:
                return None
            return b"".join(cmds), (None if noreply else store_lines_reply(len(cmds))), origs

        def collect(replies: List[Tuple[List[Any], Any]]) -> List[Any]:
            failed = refused + unplaced
            for origs, reply in replies:
                if reply is FAILED:
                    failed.extend(origs)
                elif not noreply and reply is not ALL_STORED:
                    failed.extend(o for o, line in zip(origs, reply) if line != STORED)
            return failed

        return list(mapping), prefix_bytes(key_prefix), command, unplaced, collect

    # -- deletion, counters, touch ------------------------------------------------
    def _delete_plan(self, key: Key, noreply: bool) -> Plan:
        hashkey, wire = self._keys.encode(key)
        if noreply:
            return key, hashkey, delete_command(wire, True), None, _sent_one, None, 0, 0
        return key, hashkey, delete_command(wire), read_delete_line, self._expected, DELETED, 0, 0

    def _touch_plan(self, key: Key, time: int, noreply: bool) -> Plan:
        hashkey, wire = self._keys.encode(key)
        if noreply:
            return key, hashkey, touch_command(wire, time, True), None, _sent_one, None, 0, 0
        return key, hashkey, touch_command(wire, time), read_touch_line, self._expected, TOUCHED, 0, 0

    def _expected(self, host: Any, line: bytes, token: bytes) -> int:
        """1 when ``delete``/``touch`` answered *token*, else 0 (python-memcached's debug line)."""
        if line == token:
            return 1
        self.debuglog("while expecting '%s', got unexpected response '%s'"
                      % (token.decode(), line.decode("utf-8", "replace")))
        return 0

    def _delete_multi_plan(self, keys: Iterable[Any], time: Optional[int], key_prefix: Union[str, bytes],
                           noreply: bool) -> BatchPlan:
        """1 if every server answered (``NOT_FOUND`` counts as success), else 0."""
        unplaced: List[Any] = []

        def command(host: Any, wires: Dict[bytes, Any]) -> Tuple[bytes, Any, None]:
            data = delete_many_command(list(wires), time or 0, noreply)
            return data, (None if noreply else lines_reply(len(wires), valid_delete_line)), None

        def collect(replies: List[Tuple[None, Any]]) -> int:
            ok = 0 if unplaced else 1
            for _, lines in replies:
                if lines is FAILED:
                    ok = 0
                    continue
                for line in lines or ():
                    if line != DELETED:
                        # python-memcached's debug line, also for NOT_FOUND (which still counts as success)
                        self.debuglog("while expecting 'DELETED', got unexpected response '%s'"
                                      % line.decode("utf-8", "replace"))
                        if line != NOT_FOUND:
                            ok = 0
            return ok

        return _listed(keys), prefix_bytes(key_prefix), command, unplaced, collect

    def _arith_plan(self, cmd: bytes, key: Key, delta: int, noreply: bool) -> Plan:
        delta = int(delta)
        if delta < 0:
            raise ValueError("%s delta must be >= 0, got %d" % (cmd.decode(), delta))
        hashkey, wire = self._keys.encode(key)
        if noreply:
            return key, hashkey, arith_command(cmd, wire, delta, True), None, _nothing, None, None, None
        return key, hashkey, arith_command(cmd, wire, delta), read_arith_line, self._counted, None, None, None

    def _counted(self, host: Any, line: bytes, ctx: None) -> Optional[int]:
        """What ``incr``/``decr`` return for the reply *line*."""
        try:
            if line.startswith((CLIENT_ERROR, SERVER_ERROR)):
                # e.g. "cannot increment or decrement non-numeric value": one
                # line, the stream is in step and the connection was kept.
                self.debuglog("%s: %s" % (host, line.decode("utf-8", "replace")))
                raise_for_error_line(line)
            return parse_arith_reply(line)
        except MemcacheError as exc:
            return self._fail(exc, None)

    # -- whole-server commands --------------------------------------------------
    @staticmethod
    def _stats_command(stat_args: Optional[str]) -> bytes:
        return simple_command("stats", stat_args) if stat_args else b"stats\r\n"

    @staticmethod
    def _slabs(stats: List[Tuple[str, Dict[str, str]]]) -> List[Tuple[str, Dict[str, Dict[str, str]]]]:
        """``stats items`` regrouped as ``[(server name, {slab id: {stat: value}})]``."""
        out = []
        for name, flat in stats:
            slabs: Dict[str, Dict[str, str]] = {}
            for stat, value in flat.items():
                parts = stat.split(":")
                if len(parts) == 3:  # items:<slab>:<name>
                    slabs.setdefault(parts[1], {})[parts[2]] = value
            out.append((name, slabs))
        return out

    def _server_named(self, server: Union[int, str]) -> Any:
        """*server* as an index into :attr:`servers` or a ``host:port`` label."""
        return self.servers[server] if isinstance(server, int) else next(h for h in self.servers if h.label == server)

    # -- grouping a batch by server -------------------------------------------------
    def _group(self, keys: List[Any], prefix: bytes, unplaced: Optional[List[Any]]) -> Dict[Any, Dict[bytes, Any]]:
        """``{server: {wire key: caller's key}}``, every key validated; keys with
        no usable server go to *unplaced* (``ServerDeadError`` when strict)."""
        encoded = self._keys.encode_many(keys, prefix)
        router = self._router
        single = router.single
        if single is not None and router.usable(single):
            return {single: {wire: orig for _, wire, orig in encoded}} if encoded else {}
        by_host: Dict[Any, Dict[bytes, Any]] = {}
        route = router.route
        for hashkey, wire, orig in encoded:
            host = route(hashkey)
            if host is None:
                self._no_server(orig, None)
                if unplaced is not None:
                    unplaced.append(orig)
                continue
            by_host.setdefault(host, {})[wire] = orig
        return by_host


def _listed(keys: Iterable[Any]) -> List[Any]:
    return keys if isinstance(keys, list) else list(keys)
