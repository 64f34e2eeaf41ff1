"""What one execution of a plan carries: the executor it runs for, its errors, and the helpers the compiled
closures share (paths built on demand, awaitables settled in the background, awaited results gathered)."""

from __future__ import annotations

import asyncio
import datetime
import decimal
from collections.abc import Awaitable, Callable
from contextlib import suppress
from types import CoroutineType, GeneratorType
from typing import Any

from graphql import GraphQLError, located_error
from graphql.execution import Executor
from graphql.language import FieldNode
from graphql.pyutils import Path, Undefined, gather_with_cancel

from graph.plans.errors import FieldErrors

# A position in the response, as a plain tuple shaped like graphql-core's Path (prev, key, typename): made for
# every object and list item at the cost of a tuple, turned into a Path only for a resolver's info or an error.
Location = tuple[Any, str | int, str | None] | None

COROUTINE = CoroutineType

# graphql-core's Path is a NamedTuple: made here as the tuple it is, in C, without the namedtuple's ``__new__`` (a
# Python function call per segment, and a signed URL of a page is five segments deep).
_new_path: Callable[[type[Path], tuple[Any, str | int, str | None]], Path] = tuple.__new__


def to_path(location: Location) -> Path | None:
    if location is None:
        return None
    prev, key, typename = location
    return _new_path(Path, (to_path(prev), key, typename))


def field_path(location: Location) -> Path:
    path = to_path(location)
    assert path is not None
    return path


class KnownTypes:
    """Classes whose every instance was found to need no check, for one awaitable predicate (an executor's
    ``is_awaitable``; kept by the plan cache across executions).

    ``sync``: the predicate's answer is False for every instance (see ``_cached_is_awaitable``), so
    ``type(v) not in sync and is_awaitable(v)`` is ``is_awaitable(v)``. ``plain`` (a subset of ``sync``): moreover
    no instance is an exception, None or Undefined, so a value of such a class goes straight to its completion,
    skipping the checks complete_value makes first (``remember_plain``).
    """

    __slots__ = ("plain", "str_ids", "sync")

    def __init__(self) -> None:
        self.sync: set[type] = set()
        self.plain: set[type] = set()
        # (a subset of ``plain``) classes graphql-core's ID serializes as ``str(value)`` (``remember_str_id``)
        self.str_ids: set[type] = set()


def remember_plain(plain: set[type], sync: set[type], value: Any) -> None:
    """Add ``value``'s class to ``plain`` when no instance of it can be awaitable, an exception, None or
    Undefined: it is in ``sync``, no exception class, and nothing in it redefines ``__class__`` (which
    ``isinstance`` would read)."""
    cls = type(value)
    if (
        cls in sync
        and cls not in plain
        and not issubclass(cls, BaseException)
        and cls is not NONE_TYPE
        and cls is not UNDEFINED_TYPE
        and not any("__class__" in vars(base) for base in cls.__mro__ if base is not object)
    ):
        plain.add(cls)


def remember_str_id(str_ids: set[type], plain: set[type], value: Any) -> None:
    """Add ``value``'s class to ``str_ids`` when graphql-core's ID serializer (``GraphQLID.coerce_output_value``,
    graphql/type/scalars.py ``serialize_id``) returns ``str(value)`` for every instance of it: a plain class that is
    no str, int or float and not a builtin (a UUID, say)."""
    cls = type(value)
    if cls in plain and not issubclass(cls, (str, int, float)) and cls.__module__ != "builtins":
        str_ids.add(cls)


NONE_TYPE = type(None)
UNDEFINED_TYPE = type(Undefined)


class Run:
    """One execution: the executor (variables, info, resolvers), its errors, its awaitable check."""

    __slots__ = ("errors", "executor", "field_resolver", "hide_suggestions", "is_async_iterable", "is_awaitable",
                 "plain_types", "str_id_types", "sync_types", "variable_values")

    def __init__(self, executor: Executor[Any], known: KnownTypes) -> None:
        self.executor = executor
        self.errors = FieldErrors()
        self.variable_values = executor.variable_values
        self.hide_suggestions = executor.hide_suggestions
        self.field_resolver = executor.field_resolver
        self.is_async_iterable = executor.is_async_iterable
        self.is_awaitable = _cached_is_awaitable(executor.is_awaitable, known.sync)
        # Generated code (generate.py) looks a value's class up in these before checking the value itself.
        self.sync_types = known.sync
        self.plain_types = known.plain
        self.str_id_types = known.str_ids

    def field_error(
        self, raw: Exception, nodes: list[FieldNode], location: Location, non_null: bool
    ) -> None:
        """graphql-core's handle_field_error: located at the field (or list item), raised on to the nearest
        nullable parent when non-null, else kept (the position nulled)."""
        path = field_path(location)
        error = located_error(raw, nodes, path.as_list())
        if non_null:
            raise error
        self.errors.add(error, path)

    def settle_in_background(self, awaitables: list[Awaitable[Any]]) -> None:
        """Awaitables left behind by an error raised past them still run to their end, their own errors
        dropped, as graphql-core's Executor.settle_in_background does (into the executor's background_futures)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            for awaitable in awaitables:
                if isinstance(awaitable, COROUTINE):
                    awaitable.close()
            return
        future = asyncio.gather(*awaitables, return_exceptions=True)
        background = self.executor.background_futures
        background.add(future)
        future.add_done_callback(background.discard)

    def drain_awaitables(self, iterator: Any) -> list[Awaitable[Any]]:
        """The awaitables an iterator still holds after an error (graphql-core's collect_iterator_awaitables)."""
        awaitables: list[Awaitable[Any]] = []
        with suppress(Exception):
            awaitables.extend(item for item in iterator if self.is_awaitable(item))
        return awaitables


def _cached_is_awaitable(is_awaitable: Callable[[Any], bool], sync_types: set[type]) -> Callable[[Any], bool]:
    """The executor's predicate, remembering the plain classes whose instances it found not awaitable.

    A class is remembered only when its attribute lookup is the generic one (its ``__getattribute__`` is
    object's or one of the built-in value classes', ``BUILT_IN_VALUES``: each is CPython's generic lookup), nothing
    in it defines ``__getattr__`` (a metaclass's, as enums have, is for the class's own attributes), and it is not a
    coroutine or generator: then the predicate's answer (graphql-core's and strawberry's: the type, ``isinstance``
    of coroutine and generator, ``hasattr(__await__)``) is the same for every instance. Enum members and the
    built-in values (their instances hold no attributes of their own) are remembered so too.
    """

    def check(value: Any) -> bool:
        cls = type(value)
        if cls in sync_types:
            return False
        if is_awaitable(value):
            return True
        if (
            len(sync_types) < MAX_SYNC_TYPES
            and getattr(cls, "__getattribute__", None) in GENERIC_LOOKUP
            and not any("__getattr__" in vars(base) for base in cls.__mro__)
            and not issubclass(cls, (COROUTINE, GeneratorType))
        ):
            sync_types.add(cls)
        return False

    return check


MAX_SYNC_TYPES = 1000
# The lists, scalars and times resolvers hand back: classes whose attribute lookup (``__getattribute__``) is
# CPython's generic one, as object's is.
BUILT_IN_VALUES = (
    list, tuple, dict, str, bytes, int, float, bool, datetime.datetime, datetime.date, datetime.time,
    datetime.timedelta, decimal.Decimal,
)
GENERIC_LOOKUP = frozenset(cls.__getattribute__ for cls in (object, *BUILT_IN_VALUES))


async def gather_into(results: dict[str, Any] | list[Any], keys: list[Any]) -> Any:
    """graphql-core's way of awaiting the pending entries of an object or list: one awaited directly, several
    gathered (the first error cancels the others)."""
    if len(keys) == 1:
        key = keys[0]
        results[key] = await results[key]
    else:
        values = await gather_with_cancel(*(results[key] for key in keys))
        for key, value in zip(keys, values, strict=True):
            results[key] = value
    return results


def expected_iterable(parent: str, field: str) -> GraphQLError:
    return GraphQLError(f"Expected Iterable, but did not find one for field '{parent}.{field}'.")
