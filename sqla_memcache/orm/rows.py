"""Entry payloads: a frozen result as plain column values, merged back without unpickling objects.

A cached result is normally a ``FrozenResult`` of ORM objects, stored pickled
and merged into the reading session with ``merge_frozen_result(load=False)``.
Unpickling an object rebuilds its ``InstanceState`` and merging copies it
again into a second instance, property by property -- most of a hit's cost.

For the common case -- rows whose objects carry only their column attributes
(no loaded relationships, no loader options) -- :func:`encode` stores the
objects as ``(class, identity key, load path, column values)`` instead, and
:func:`merge` rebuilds them directly in the session: the same steps
``Session.merge(load=False)`` takes for an object not yet in the session
(attach, set the values, mark them committed, fire the ``load`` event), once.
An object already in the session's identity map goes through
``Session.merge`` itself, so its state is overwritten exactly as before.
Anything else is stored as the ``FrozenResult`` and merged as before.
"""
from __future__ import annotations

import pickle
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from sqlalchemy import inspect
from sqlalchemy.engine import FrozenResult, Result
from sqlalchemy.orm import Session
from sqlalchemy.orm.loading import merge_frozen_result

from . import _compat, safepickle
from ..memo import Memo, WeakMemo
from .options import FromCache

__all__ = ["Prepared", "Rows", "attach", "encode", "merge", "prepare"]


class Rows:
    """A frozen result whose ORM objects are replaced by their column values.

    ``template`` is the ``FrozenResult`` without rows (its metadata),
    ``data`` its rows with ``None`` where an object was (lists; bare values
    for a scalar result), ``objects`` lists ``(row, column, class, identity
    key, load path, values)``.
    """

    __slots__ = ("template", "data", "objects", "_ready")

    def __init__(self, template: FrozenResult, data: List[Any], objects: List[Tuple[Any, ...]]) -> None:
        self.template = template
        self.data = data
        self.objects = objects
        #: what every merge of this payload computes alike (see _ready); a held payload is merged often
        self._ready: Optional[Tuple[bool, List[Tuple[Any, ...]], Tuple[Tuple[type, Any], ...], bool]] = None

    def __reduce__(self) -> Tuple[Any, ...]:
        # The template is the same for every entry of a statement: pickled apart, it is
        # unpickled once per process (see _template) instead of on every hit.
        blob = pickle.dumps(self.template, protocol=pickle.HIGHEST_PROTOCOL)
        return _rows, (blob, self.data, self.objects)


#: pickled result template -> the decoded (empty) FrozenResult; entries of one statement share it
_TEMPLATES: Memo[bytes, FrozenResult] = Memo(1024)


def _template(blob: bytes) -> FrozenResult:
    found = _TEMPLATES.get(blob)
    if found is None:
        found = safepickle.loads(blob)  # allow-listed globals only
        if not isinstance(found, FrozenResult):
            raise TypeError("not a FrozenResult: %s" % type(found).__name__)
        _TEMPLATES.put(blob, found)
    return found


@safepickle.allow  # entries name it: the allow-listed unpickler resolves it
def _rows(blob: bytes, data: List[Any], objects: List[Tuple[Any, ...]]) -> Rows:
    for _i, _j, cls, _key, _path, values in objects:
        # a class no longer mapped makes the entry undecodable (a miss), as an unpicklable object would
        if _compat.class_manager(cls) is None or not isinstance(values, dict):
            raise TypeError("entry holds an object of %r, which is not a mapped class" % (cls,))
    return Rows(_template(blob), data, objects)


# mapper -> (instrumented column attribute keys, every other attribute key)
_MAPPERS: WeakMemo[Tuple[Tuple[str, ...], FrozenSet[str]]] = WeakMemo()


def _attribute_keys(mapper: Any) -> Tuple[Tuple[str, ...], FrozenSet[str]]:
    def make() -> Tuple[Tuple[str, ...], FrozenSet[str]]:
        columns = tuple(p.key for p in mapper.column_attrs if p.instrument)
        return columns, frozenset(mapper.attrs.keys()) - set(columns)

    return _MAPPERS.get_or_make(mapper, make)


def _carries_options(options: Any) -> bool:
    """True when an object's load options matter to its later loads.

    A plain ``FromCache`` propagates only so SQLAlchemy keeps option
    positions straight (see ``options.FromCache``); the hook ignores it on
    lazy loads, so an object carrying nothing else can use the flat payload.
    """
    return any(type(opt) is not FromCache for opt in options)


def _flat(obj: Any) -> Optional[Tuple[Any, ...]]:
    """``(class, key, path, values)`` of an object holding column attributes only, else None."""
    state = inspect(obj)
    if (
        state.key is None or state.modified or state.expired_attributes or _carries_options(state.load_options)
        or state.callables or state.committed_state
    ):
        return None
    columns, others = _attribute_keys(state.mapper)
    dict_ = state.dict
    if any(name in dict_ for name in others):
        return None  # loaded relationships (or other attributes) go through Session.merge
    try:
        values = {name: dict_[name] for name in columns}
    except KeyError:
        return None  # deferred or unloaded columns: merge() expires them; keep its behaviour
    path = tuple(state.load_path.serialize()) if state.load_path else ()
    return type(obj), state.key, path, values


def _is_instance(value: Any) -> bool:
    return _compat.class_manager(type(value)) is not None


def encode(frozen: FrozenResult) -> Any:
    """Return :class:`Rows` for ``frozen`` when every object in it is plain, else ``frozen`` itself."""
    scalars = _compat.supports_scalars(frozen)
    rows = [[value] for value in frozen.data] if scalars else [list(row) for row in frozen.data]
    objects = []
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if value is None or not _is_instance(value):
                continue
            flat = _flat(value)
            if flat is None:
                return frozen
            objects.append((i, j) + flat)
            row[j] = None
    data = [row[0] for row in rows] if scalars else rows
    return Rows(frozen.with_new_rows([]), data, objects)


#: serialized load path -> its PathRegistry
_PATHS: Memo[Tuple[Any, ...], Any] = Memo(1024)


def _load_path(path: Tuple[Any, ...]) -> Any:
    found = _PATHS.get(path)
    if found is None:
        found = _PATHS.put(path, _compat.PathRegistry.deserialize(list(path)) if path else _compat.PathRegistry.root)
    return found


def _ready(payload: Rows) -> Tuple[bool, List[Tuple[Any, ...]], Tuple[Tuple[type, Any], ...], bool]:
    """``(scalars, objects, classes, repeats)``: ``objects`` lists ``(row, column, class manager,
    identity key, load path registry, values, whether values name exactly the mapped columns,
    those columns)``, ``classes`` the ``(class, manager)`` pairs they were made with, ``repeats``
    whether an identity comes back in another row. Computed once per payload, again when a
    class's manager changed (the class was mapped anew)."""
    ready = payload._ready
    if ready is not None:
        for cls, manager in ready[2]:
            if _compat.class_manager(cls) is not manager:
                break
        else:
            return ready
    classes: Dict[type, Tuple[Any, Tuple[str, ...]]] = {}
    objects = []
    for i, j, cls, key, path, values in payload.objects:
        known = classes.get(cls)
        if known is None:
            manager = _compat.class_manager(cls)
            known = classes[cls] = (manager, _attribute_keys(manager.mapper)[0])
        manager, columns = known
        load_path = _load_path(path) if path else _compat.PathRegistry.root
        objects.append((i, j, manager, key, load_path, values, tuple(values) == columns, columns))
    repeats = len({item[3] for item in objects}) != len(objects)
    ready = payload._ready = (_compat.supports_scalars(payload.template), objects,
                              tuple((cls, known[0]) for cls, known in classes.items()), repeats)
    return ready


class Prepared:
    """A payload's objects built for one session, nothing in the session changed yet
    (:func:`prepare`); :func:`attach` puts them in."""

    __slots__ = ("payload", "rows", "scalars", "steps", "new", "result", "simple", "ahead")

    def __init__(self, payload: Any, rows: Any = None, scalars: bool = False,
                 steps: Optional[List[Tuple[Any, ...]]] = None,
                 new: Optional[List[Tuple[Any, Dict[str, Any]]]] = None) -> None:
        self.payload = payload
        self.rows = rows
        self.scalars = scalars
        #: (object, its state, its dict, what to fire after loading it or None,
        #:  True when the session already holds its identity: Session.merge then)
        self.steps = steps
        #: (state, dict) of the new objects, committed already
        self.new = new
        #: the Result, built ahead when no object goes through Session.merge
        self.result: Any = None
        #: True when attaching is putting ``new`` in the identity map, nothing else
        self.simple = False
        #: True while ``new`` is in the session's identity map by :func:`attach_ahead`
        self.ahead = False


def prepare(session: Session, payload: Any) -> Prepared:
    """The first half of :func:`merge`: build the payload's new objects (instances, identity
    keys, values, committed) and the rows holding them, reading but never changing ``session``.

    An abandoned :class:`Prepared` leaves nothing behind: its objects belong to no session.
    So the version check of a held entry runs while this is done (``loader.py``), and the
    objects go into the session (:func:`attach`) only once the versions said the entry is current.
    """
    if not isinstance(payload, Rows):
        return Prepared(payload)
    scalars, objects, _classes, repeats = _ready(payload)
    rows = [[value] for value in payload.data] if scalars else [list(row) for row in payload.data]
    identity_map = session.identity_map
    present = _compat.identity_dict(identity_map)  # (a fresh session's is empty: one test per object)
    made: Dict[Any, Any] = {}  # an identity repeated in the rows is one object, merged once
    fires: Dict[Any, Any] = {}  # manager -> what to fire after loading one of its objects (None: nothing)
    # What attach() does per object, (object, state, dict, what to fire or None, in the session
    # already): only listed once an object needs more than the identity-map insert of ``new``.
    steps: Optional[List[Tuple[Any, ...]]] = None
    new: List[Tuple[Any, Dict[str, Any]]] = []
    for i, j, manager, key, load_path, values, exact, columns in objects:
        if repeats:
            obj = made.get(key)
            if obj is not None:
                rows[i][j] = obj
                continue
        obj = manager.new_instance()
        state = _compat.instance_state(obj)
        state.key = key
        state.load_path = load_path
        dict_ = obj.__dict__
        if key in present and identity_map.get(key) is not None:
            # Session.merge overwrites the session's copy (at attach): do exactly that
            dict_.update(values)
            if steps is None:
                steps = _steps_of(new)
            steps.append((obj, state, dict_, None, True))
        else:
            # what SQLAlchemy's loading does for a row not in the identity map (no copy,
            # no transaction begun, events only when listened to)
            if exact:
                dict_.update(values)
            else:
                # the mapping changed since the entry was stored: copy mapped columns only
                # and expire the missing ones, as merge() does
                dict_.update((name, value) for name, value in values.items() if name in columns)
                missing = [name for name in columns if name not in values]
                if missing:
                    _compat.expire_attributes(state, dict_, missing)
            fire = fires.get(manager, fires)
            if fire is fires:
                fire = fires[manager] = _compat.load_dispatcher(session, manager)
            if fire is not None and steps is None:
                steps = _steps_of(new)
            if steps is not None:
                steps.append((obj, state, dict_, fire, False))
            new.append((state, dict_))
        rows[i][j] = obj
        if repeats:
            made[key] = obj
    if new:  # committed now (it touches these states alone); attached by attach()
        _compat.commit_all_states(new)
    if steps is None:  # new objects only, nothing listening: attach() inserts ``new``, nothing else
        prepared = Prepared(payload, rows, scalars, None, new)
        prepared.result = _result(payload, rows, scalars)
        prepared.simple = True
        return prepared
    prepared = Prepared(payload, rows, scalars, steps, new)
    if not any(known for _obj, _state, _dict, _fire, known in steps):
        prepared.result = _result(payload, rows, scalars)
    return prepared


def _steps_of(new: List[Tuple[Any, Dict[str, Any]]]) -> List[Tuple[Any, ...]]:
    """The attach steps of the objects listed in ``new`` so far (new, nothing to fire)."""
    return [(state.obj(), state, dict_, None, False) for state, dict_ in new]


def _result(payload: Rows, rows: List[Any], scalars: bool) -> Result[Any]:
    return payload.template.with_new_rows(rows if scalars else [tuple(row) for row in rows])()  # type: ignore[arg-type,misc]


def attach_ahead(session: Session, prepared: Prepared) -> None:
    """Put :func:`prepare`'s objects into ``session`` before the caller knows whether they
    may stay: :func:`attach` then only returns the Result, :func:`withdraw` takes them
    out again. Done only in the usual case (new objects, nothing listening), where
    attaching is the identity-map insert alone: no event, no transaction, nothing another
    part of the program can see before the caller decides (a hit reads its versions
    meanwhile; the work done while memcached answers costs the least CPU)."""
    if prepared.simple and not prepared.ahead:
        prepared.ahead = True  # (set first: a withdraw after an interrupted insert removes what went in)
        _compat.attach_committed(session, prepared.new, committed=True)  # type: ignore[arg-type]


def withdraw(session: Session, prepared: Prepared) -> None:
    """Undo :func:`attach_ahead`: the objects leave the identity map and belong to no session,
    as if they had never been attached (nothing else changed in between)."""
    if prepared.ahead:
        prepared.ahead = False
        _compat.detach_new(session, prepared.new)  # type: ignore[arg-type]


def attach(session: Session, statement: Any, prepared: Prepared) -> Result[Any]:
    """The second half of :func:`merge`: put :func:`prepare`'s objects into ``session``
    (the same session, nothing done with it in between) and return the Result."""
    if prepared.ahead:  # attached already (attach_ahead)
        return prepared.result
    if prepared.simple:  # the usual case: new objects, nothing listening
        _compat.attach_committed(session, prepared.new, committed=True)  # type: ignore[arg-type]
        return prepared.result
    steps = prepared.steps
    if steps is None:
        return merge_frozen_result(session, statement, prepared.payload, load=False)()
    rows = prepared.rows
    loaded: List[Tuple[Any, Dict[str, Any]]] = []  # new states, attached together (as loading.py)
    for obj, state, dict_, fire, known in steps:
        if known:
            if loaded:
                _compat.attach_committed(session, loaded, committed=True)
                loaded = []
            merged = _compat.merge_state(session, state, dict_)
            if merged is not obj:  # every row holding this identity gets the session's object
                for row in rows:
                    for column, value in enumerate(row):
                        if value is obj:
                            row[column] = merged
            continue
        loaded.append((state, dict_))
        if fire is not None:  # listeners see each object attached and committed, as after a load
            _compat.attach_committed(session, loaded, committed=True)
            loaded = []
            fire(state)
    if loaded:
        _compat.attach_committed(session, loaded, committed=True)
    result = prepared.result
    return result if result is not None else _result(prepared.payload, rows, prepared.scalars)


def merge(session: Session, statement: Any, payload: Any) -> Result[Any]:
    """The payload of a current entry as a Result of objects in ``session`` (as ``merge(load=False)``)."""
    return attach(session, statement, prepare(session, payload))
