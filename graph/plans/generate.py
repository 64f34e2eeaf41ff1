"""Generated Python for an object's selection set: one function that builds the response dict with its fields'
reads, leaf coercions, null checks and list loops written out, in place of a closure per field and value.

Each generated function is ``execute_fields(source, location, run)`` of graph/plans/compile.py, and its code
does, statement by statement, what the closures it replaces do (``_basic_field``, ``_leaf``, ``_object_value``,
``_list``, ``_object``; they mirror graphql-core's Executor): the same reads and calls in the same order, the same
errors at the same locations, awaitables awaited at the same points. It writes out the common case only: values
of classes known plain (``runtime.KnownTypes``), completed in place, and the fields of nested objects (two
levels deep) in place of a call to their own function. What it does not write out it calls: a field with a
resolver (its closure, ``FieldSpec.execute``), a deeper object's function (generated or not), a list's item that
is itself a list, and every rare path (an awaitable, a null where null is an error, an exception as a value, a
class not seen yet, an iterable that is not a list or tuple) through the closures' own helpers. So a value is
completed the same way whichever code runs it.

Safety: nothing of the client's document reaches the source. Response keys, field nodes, messages, type names
and every other value are bound to generated names (``k3``, ``n3``, ...) in the function's namespace; the only
other words in the source are ours, and attribute names (a basic field's Python name, from the schema's code)
are written out only when they are plain identifiers, else read with ``getattr`` and a bound name. The namespace's
builtins are the few the code uses. The source of one plan is bounded, and so is that of all the plans of a cache
(``Generator``): an object past either runs on closures. Writing it is bounded too: an object's source is written
only as far as it could fit, and what a plan writes and drops is at most its budget again.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from graphql import FieldNode, GraphQLID, GraphQLObjectType
from graphql.pyutils import Undefined

from graph.plans.compile import (
    IDENTITY,
    CompleteFn,
    Completion,
    FieldSpec,
    ObjectFn,
    Reader,
    awaited_field,
    field_completed_later,
    list_item_helpers,
    not_coerced,
    settle_list,
)
from graph.plans.runtime import (
    COROUTINE,
    NONE_TYPE,
    Location,
    Run,
    gather_into,
    remember_plain,
    remember_str_id,
)

# Characters of generated source one plan may hold (all its @skip/@include variants), and all the plans of one
# cache; objects past either run on closures. A field is 0.3-1 KB of source, compiled at ~6 MB/s into ~3x its
# size in code objects: a plan of 64 KiB costs ~11 ms once and ~200 KB, the cache at most ~6 MB.
MAX_SOURCE = 64 * 1024
MAX_TOTAL_SOURCE = 2 * 1024 * 1024
# Objects written out inside another's function (an object nested in a field or list item), at most this deep,
# and only where the blocks around them leave room for theirs (CPython's 20 statically nested blocks).
# (A written-out object's location is an expression, evaluated only where it is needed, an error or a call: at most
# two tuples deep.)
MAX_INLINED = 2
MAX_INLINE_BLOCKS = 10

# What generated code may name besides its namespace's bound values.
BUILTINS: dict[str, Any] = {
    "type": type, "iter": iter, "enumerate": enumerate, "list": list, "tuple": tuple, "str": str,
    "Exception": Exception, "TypeError": TypeError,
}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
INDENT = " "  # (one space a level: deep code stays small)


class GeneratorStats(Protocol):
    """Where a generator counts what it did (the plan cache's PlanStats)."""

    generated: int
    over_budget: int
    written: int


@dataclass
class _Counts:
    generated: int = 0
    over_budget: int = 0
    written: int = 0


class _TooLong(Exception):
    """The source being written passed the characters it may have."""


@dataclass
class SourcePool:
    """The characters of generated source the plans of one cache may still hold."""

    left: int = MAX_TOTAL_SOURCE


@dataclass
class Generator:
    """Generates the functions of one plan's objects, within its budget of source characters and its cache's."""

    budget: int = MAX_SOURCE
    stats: GeneratorStats = field(default_factory=_Counts)
    keep_sources: bool = False
    pool: SourcePool = field(default_factory=SourcePool)
    # The characters of source generated, drawn from the pool (given back by ``release``).
    used: int = 0
    # The characters it may still write and drop (an object's source that did not fit): writing is most of what
    # generating costs, so a plan of many objects too big for its budget writes in vain at most its budget again.
    droppable: int = field(init=False)

    def __post_init__(self) -> None:
        self.droppable = self.budget
    # The source of each function, when kept (``keep_sources``: tests, and a look at what runs).
    sources: list[str] = field(default_factory=list, repr=False)

    def object_fields(self, parent: GraphQLObjectType, specs: list[FieldSpec]) -> ObjectFn | None:
        """``execute_fields`` for ``specs`` (``parent``'s selection, compiled) as one generated function, or None
        when the plan's budget or its cache's cannot hold its source (closures run it)."""
        for inline in (True, False):  # nested objects written out in place; past the budget, called instead
            # Written only as far as it could fit (kept) and be dropped (in vain).
            source = _ObjectSource(specs, inline, min(self.budget, self.pool.left, self.droppable))
            try:
                text = source.text()
            except _TooLong:
                self.droppable -= source.size
                self.stats.written += source.size
                continue
            size = len(text)
            self.stats.written += size
            try:
                code = compile(text, f"<plan: {parent.name}>", "exec")
            except (SyntaxError, RecursionError, MemoryError):  # (a limit of the compiler's: never expected)
                self.droppable -= size
                continue
            break
        else:
            self.stats.over_budget += 1
            return None
        self.budget -= size
        self.pool.left -= size
        self.used += size
        self.stats.generated += 1
        if self.keep_sources:
            self.sources.append(text)
        namespace: dict[str, Any] = {"__builtins__": BUILTINS, **source.namespace}
        exec(code, namespace)  # our source only: see the module docstring
        # Taken out of the namespace that is its globals: no cycle, so a plan dropped from its cache is freed at once
        # (in a serving process, a cycle frozen by server/gc_pacer.py waits for the next full collection).
        function: ObjectFn = namespace.pop("execute_fields")
        return function

    def release(self) -> None:
        """The plan is gone from its cache: its source no longer counts against the cache's."""
        self.pool.left += self.used
        self.used = 0


def _is_id(completion: Completion) -> bool:
    """An ID serialized by graphql-core's own serializer: a value of a class ``remember_str_id`` names is
    serialized as ``str(value)``, written out."""
    leaf = completion.leaf
    return leaf is not None and leaf.coerce_output_value is GraphQLID.coerce_output_value


def _pend(keys: list[str] | None, values: list[Any] | None, key: str, value: Any) -> tuple[list[str], list[Any]]:
    """A field left pending: its key and coroutine, awaited with the others once every field has run."""
    if keys is None or values is None:
        return [key], [value]
    keys.append(key)
    values.append(value)
    return keys, values


def _pend_index(indexes: list[int] | None, index: int) -> list[int]:
    """A list item left pending."""
    if indexes is None:
        return [index]
    indexes.append(index)
    return indexes


def _field_after_read(spec: FieldSpec, completion: Completion) -> Callable[[Any, Location, Run], Any]:
    """What compile.py's ``_basic_field`` does with the value it read, for a value generated code does not
    complete itself: awaited later, or completed by the closure (the value's class remembered when plain); the
    completion's error is raised to the generated code, which locates it at the field."""
    key, parent = spec.key, spec.parent.name
    awaited = awaited_field(key, parent, spec.nodes, spec.non_null, completion.complete)
    completed_later = field_completed_later(key, parent, spec.nodes, spec.non_null)
    complete = completion.complete

    def after_read(value: Any, location: Location, run: Run) -> Any:
        if run.is_awaitable(value):
            return awaited(value, location, run)
        if value is not None:
            remember_plain(run.plain_types, run.sync_types, value)
        completed = complete(value, (location, key, parent), run)
        if type(completed) is COROUTINE:
            return completed_later(completed, location, run)
        return completed

    return after_read


def _item_helpers(item: Completion, nodes: list[FieldNode]) -> tuple[CompleteFn, CompleteFn]:
    """compile.py's ``add_item`` for an item generated code does not complete itself (its value, or the coroutine
    that will complete it), and the wrapper of an item's completion that awaits."""
    item_non_null = item.null is not None
    awaited_item, completed_item_later = list_item_helpers(item.complete, nodes, item_non_null)
    complete = item.complete

    def item_slowly(value: Any, location: Location, run: Run) -> Any:
        if run.is_awaitable(value):
            return awaited_item(value, location, run)
        try:
            if value is not None:
                remember_plain(run.plain_types, run.sync_types, value)
            completed = complete(value, location, run)
            if type(completed) is COROUTINE:
                return completed_item_later(completed, location, run)
        except Exception as raw:  # noqa: BLE001 - a field error, as in graphql-core
            run.field_error(raw, nodes, location, item_non_null)
            return None
        return completed

    return item_slowly, completed_item_later


@dataclass(frozen=True)
class _Frame:
    """Where an object's fields are written out: the function's own object, or one written out inside it (a
    nested object's fields in place of a call to its function). ``tag`` keeps each frame's variables apart."""

    source: str  # the variable holding the object
    location: str  # an expression of its location (evaluated only where a location is needed)
    tag: str
    # Statically nested blocks (try, for) around the frame's fields: CPython allows 20.
    blocks: int
    inlined: int  # objects written out around it


class _ObjectSource:
    """The source of one object's ``execute_fields`` and the values its names are bound to.

    Only the common case is written out: a value whose class is known plain (``KnownTypes``), completed in place,
    a nested object's fields written out in place of a call (``inline``: up to MAX_INLINED deep). Any other
    value (awaitable, null, an exception, a class not seen yet, an iterable other than a list or tuple) goes to a
    closure doing what compile.py's closures do with it (``_field_after_read``, ``_item_helpers``).
    """

    def __init__(self, specs: list[FieldSpec], inline: bool, limit: int) -> None:
        self.lines: list[str] = []
        # The characters of its lines so far (each with its newline), at most ``limit``: past it, _TooLong.
        self.size = 0
        self.limit = limit
        self.namespace: dict[str, Any] = {
            "CO": COROUTINE, "U": Undefined, "gather_into": gather_into, "settle_list": settle_list,
            "pend": _pend, "pend_index": _pend_index, "remember_str_id": remember_str_id, "NT": NONE_TYPE,
        }
        self.names: dict[int, str] = {}
        self.count = 0
        self.frames = 0
        self.specs = specs
        self.inline = inline
        self.uses_str_ids = False
        self.uses_sync = False

    def bind(self, prefix: str, value: Any) -> str:
        """The name of ``value`` in the namespace: the prefix (ours) and a number; one name per value."""
        name = self.names.get(id(value))
        if name is None:
            name = f"{prefix}{self.count}"
            self.count += 1
            self.namespace[name] = value  # (held here, so its id stays its own)
            self.names[id(value)] = name
        return name

    def line(self, depth: int, text: str, at: int | None = None) -> None:
        line = INDENT * depth + text
        size = self.size + len(line) + 1
        if size > self.limit:
            raise _TooLong
        self.size = size
        if at is None:
            self.lines.append(line)
        else:
            self.lines.insert(at, line)

    def text(self) -> str:
        if not self.lines:
            self._function()
        return "\n".join(self.lines) + "\n"

    def _function(self) -> None:
        self.line(0, "def execute_fields(source, location, run):")
        self.line(1, "G = run.plain_types")
        frame = _Frame("source", "location", "", 0, 0)
        result = self._fields(1, frame, self.specs)
        self.line(1, "if pk is None:")
        self.line(2, f"return {result}")
        self.line(1, f"return gather_into({result}, pk)")
        if self.uses_str_ids:
            self.line(1, "SI = run.str_id_types", at=2)
        if self.uses_sync:
            self.line(1, "S = run.sync_types", at=2)

    def _fields(self, depth: int, frame: _Frame, specs: list[FieldSpec]) -> str:
        """The fields of ``frame``'s object, run in order (``_object``); returns the expression of its dict. Pending
        ones are left in ``pk``/``pv`` (tagged); an error raised past them lets them settle."""
        tag = frame.tag
        self.line(depth, f"pk{tag} = pv{tag} = None")
        self.line(depth, "try:")
        inner = replace(frame, blocks=frame.blocks + 1)
        values = []
        for index, spec in enumerate(specs):
            value = f"v{tag}{index}"
            key = self.bind("k", spec.key)
            self._field(depth + 1, inner, spec, key, value)
            values.append(f"{key}: {value}")
        if not specs:
            self.line(depth + 1, "pass")
        self.line(depth, "except Exception:")
        self.line(depth + 1, f"if pv{tag} is not None:")
        self.line(depth + 2, f"run.settle_in_background(pv{tag})")
        self.line(depth + 1, "raise")
        return f"{{{', '.join(values)}}}"

    def _field(self, depth: int, frame: _Frame, spec: FieldSpec, key: str, value: str) -> None:
        tag = frame.tag
        if spec.field_def is None:  # __typename
            self.line(depth, f"{value} = {self.bind('t', spec.parent.name)}")
            return
        if spec.reader is None or spec.completion is None:  # a resolver: the closure, as _object calls it
            self.line(depth, f"{value} = {self.bind('f', spec.execute)}({frame.source}, {frame.location}, run)")
            self.line(depth, f"if type({value}) is CO:")
            self.line(depth + 1, f"pk{tag}, pv{tag} = pend(pk{tag}, pv{tag}, {key}, {value})")
            return
        self._basic_field(depth, frame, spec, spec.reader, spec.completion, key, value)

    def _basic_field(
        self, depth: int, frame: _Frame, spec: FieldSpec, reader: Reader, completion: Completion, key: str,
        value: str,
    ) -> None:
        """compile.py's ``_basic_field``: read, completed in place (a plain value) or by the closure's way; an
        error located at the field."""
        read, attribute = reader
        tag, location = frame.tag, frame.location
        here = f"({location}, {key}, {self.bind('p', spec.parent.name)})"
        after_read = self.bind("ar", _field_after_read(spec, completion))
        later = self.bind("lt", field_completed_later(spec.key, spec.parent.name, spec.nodes, spec.non_null))
        if read is getattr and IDENTIFIER.fullmatch(attribute) and not keyword.iskeyword(attribute):
            expression = f"{frame.source}.{attribute}"
        else:
            expression = f"{self.bind('r', read)}({frame.source}, {self.bind('a', attribute)})"

        def pending(at: int) -> None:  # the completion returned a coroutine (an object or list with pending fields)
            self.line(at, f"{value} = {later}({value}, {location}, run)")
            self.line(at, f"pk{tag}, pv{tag} = pend(pk{tag}, pv{tag}, {key}, {value})")

        self.line(depth, "try:")
        inner = replace(frame, blocks=frame.blocks + 1)
        body = depth + 1
        self.line(body, f"{value} = {expression}")
        if completion.item is not None:
            self.line(body, f"if type({value}) in G and (type({value}) is list or type({value}) is tuple):")
            self._list(body + 1, inner, completion.item, value, here, spec.nodes, pending)
        else:
            fast = IDENTITY.get(completion.leaf) if completion.leaf is not None else None
            if fast is not None:
                self.line(body, f"if type({value}) is {self.bind('fc', fast)}:")
                self.line(body + 1, "pass")
                if _is_id(completion):
                    self.uses_str_ids = True
                    self.line(body, f"elif type({value}) in SI:")
                    self.line(body + 1, f"{value} = str({value})")
                self.line(body, f"elif type({value}) in G:")
            else:
                self.line(body, f"if type({value}) in G:")
            self._plain(body + 1, inner, completion, value, here, pending)
        if completion.null is None:
            self._none_stays(body, value)
        self.line(body, "else:")
        self.line(body + 1, f"{value} = {after_read}({value}, {location}, run)")
        self.line(body + 1, f"if type({value}) is CO:")
        self.line(body + 2, f"pk{tag}, pv{tag} = pend(pk{tag}, pv{tag}, {key}, {value})")
        self.line(depth, "except Exception as e:")
        self.line(depth + 1, f"run.field_error(e, {self.bind('n', spec.nodes)}, {here}, {spec.non_null})")
        if not spec.non_null:
            self.line(depth + 1, f"{value} = None")

    def _none_stays(self, depth: int, value: str) -> None:
        """A None in a nullable place is completed as None, once None is known never awaitable (so the closures'
        check would say so); written as an ``elif`` of the value's chain."""
        self.uses_sync = True
        self.line(depth, f"elif {value} is None and NT in S:")
        self.line(depth + 1, "pass")

    def _plain(
        self, depth: int, frame: _Frame, completion: Completion, value: str, here: str,
        pending: Callable[[int], None],
    ) -> None:
        """The completion of a leaf or object value of a class known plain (never awaitable, an exception or
        null), in place: a leaf coerced, an object's fields executed (written out here, or its function called)."""
        if completion.leaf is not None:
            self.line(depth, f"cv = {self.bind('co', completion.leaf.coerce_output_value)}({value})")
            self.line(depth, "if cv is U or cv is None:")
            self.line(depth + 1, f"raise TypeError({self.bind('nc', not_coerced)}({self.bind('ty', completion.leaf)}, "
                                 f"{value}, cv))")
            if _is_id(completion):
                self.uses_str_ids = True
                self.line(depth, f"remember_str_id(SI, G, {value})")
            self.line(depth, f"{value} = cv")
            return
        assert completion.fields is not None
        specs = completion.specs
        if self.inline and specs is not None and frame.inlined < MAX_INLINED and frame.blocks <= MAX_INLINE_BLOCKS:
            self.frames += 1
            nested = _Frame(value, here, f"f{self.frames}_", frame.blocks, frame.inlined + 1)
            result = self._fields(depth, nested, specs)
            self.line(depth, f"if pk{nested.tag} is None:")
            self.line(depth + 1, f"{value} = {result}")
            self.line(depth, "else:")
            self.line(depth + 1, f"{value} = gather_into({result}, pk{nested.tag})")
            pending(depth + 1)
            return
        self.line(depth, f"{value} = {self.bind('o', completion.fields)}({value}, {here}, run)")
        self.line(depth, f"if type({value}) is CO:")
        pending(depth + 1)

    def _list(
        self, depth: int, frame: _Frame, item: Completion, value: str, here: str, nodes: list[FieldNode],
        pending: Callable[[int], None],
    ) -> None:
        """compile.py's ``complete_list`` for a list or tuple (a plain class: never awaitable, an exception or
        null), each item completed in place when plain, else by the closure's way."""
        item_slowly, item_later = _item_helpers(item, nodes)
        slowly = self.bind("si", item_slowly)
        tag = frame.tag
        here_list, out, pi, it, i, x = (f"{name}{tag}" for name in ("l", "out", "pi", "it", "i", "x"))
        item_here = f"({here_list}, {i}, None)"
        self.line(depth, f"{here_list} = {here}")
        self.line(depth, f"{out} = []")
        self.line(depth, f"{pi} = None")
        self.line(depth, f"{it} = iter({value})")
        self.line(depth, "try:")
        self.line(depth + 1, f"for {i}, {x} in enumerate({it}):")
        at = depth + 2
        fast = IDENTITY.get(item.leaf) if item.leaf is not None else None
        if item.item is None:  # (a list of lists: each inner list by the closure's way)
            if fast is not None:
                self.line(at, f"if type({x}) is {self.bind('fc', fast)}:")
                self.line(at + 1, "pass")
                self.line(at, f"elif type({x}) in G:")
            else:
                self.line(at, f"if type({x}) in G:")
            later = self.bind("il", item_later)

            def item_pending(inner: int) -> None:
                self.line(inner, f"{x} = {later}({x}, {item_here}, run)")
                self.line(inner, f"{pi} = pend_index({pi}, {i})")

            self.line(at + 1, "try:")
            item_frame = replace(frame, blocks=frame.blocks + 3)
            self._plain(at + 2, item_frame, item, x, item_here, item_pending)
            self.line(at + 1, "except Exception as e:")
            self.line(at + 2, f"run.field_error(e, {self.bind('n', nodes)}, {item_here}, {item.null is not None})")
            if item.null is None:
                self.line(at + 2, f"{x} = None")
                self._none_stays(at, x)
            self.line(at, "else:")
            at += 1
        self.line(at, f"{x} = {slowly}({x}, {item_here}, run)")
        self.line(at, f"if type({x}) is CO:")
        self.line(at + 1, f"{pi} = pend_index({pi}, {i})")
        self.line(depth + 2, f"{out}.append({x})")
        self.line(depth, "except Exception:")
        self.line(depth + 1, f"settle_list(run, {out}, {pi}, {it})")
        self.line(depth + 1, "raise")
        self.line(depth, f"if {pi} is None:")
        self.line(depth + 1, f"{value} = {out}")
        self.line(depth, "else:")
        self.line(depth + 1, f"{value} = gather_into({out}, {pi})")
        pending(depth + 1)
