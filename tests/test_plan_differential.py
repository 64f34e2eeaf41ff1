"""Compiled execution plans change nothing but speed: drawn operations are answered alike with and without them.

Hypothesis draws valid operations over the real schema (tests/differential_documents.py: every object type,
nested selections, aliases and same-key merges, inline and named fragments, variables with defaults and nulls,
``@skip``/``@include`` with literal and variable conditions, ``__typename``, arguments that make resolvers raise,
mutations' root fields run one after another) and a viewer (the owner of a rich fixed state, a stranger to it, an
anonymous client). Each operation goes to two apps on the same database (tests/differential_state.py): one with
``EXECUTION_PLANS`` on, one with it off (graphql-core executes everything). The answers must be the same bytes:
status, ``data`` with its keys in order, ``errors`` with their messages, paths, locations and ``extensions``
(the request id aside, which differs by design). The state never changes: mutations are drawn to be refused or to
be no-ops, and the rows are checked to be as they were after each one. Subscriptions that end by themselves (an
ended job's, or one refused) run over real websockets on two more apps, and their messages must be the same too.

Two things make graphql-core itself answer one operation differently from one request to the next: a signed
URL's window may turn between them (storage/objects/signing.py), and errors raised in fields that run
concurrently (two root fields each awaiting the database) are listed in the order they happened. So when the
first answers differ, both apps are asked again, up to ``ASK_AGAIN`` times: the planned app must give, byte for
byte, an answer graphql-core gave. (A plan that answers wrongly does so every time, and fails.)

Each operation must also have run on its plan (the ``PlanCache``'s figures; each subscription event too), unless
it gives a variable condition null (graphql-core refuses that; plans leave such requests to it by design), and no
answer may hold an INTERNAL_SERVER_ERROR. The last test checks what the examples covered: every object type, most
fields, each error code resolvers raise, most operations on plans. ``PLAN_DIFFERENTIAL_EXAMPLES=n`` draws n
operations (and a tenth as many subscriptions) with fresh seeds instead of the fixed seeds' 500; a failure prints
the operation to reproduce it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from graph.plans import PlanCache
from server.app import create_app
from server.cli import uvicorn_config
from storage.database import create_pool
from tests.conftest import token_for
from tests.differential_documents import Operation, Pools, object_types, operations, rejected, subscriptions
from tests.differential_state import DifferentialState, app_client, differential_state, fingerprint
from tests.realtime_support import GraphQLSocket
from tests.support import free_port, request_id_checked, serve_uvicorn

EXAMPLES = int(os.environ.get("PLAN_DIFFERENTIAL_EXAMPLES") or 0)
DEFAULT_EXAMPLES = 500
SUBSCRIPTION_EXAMPLES = max(EXAMPLES // 10, 50)
# The error codes the drawn operations must have met, planned and unplanned alike (FORBIDDEN is never raised by a
# resolver of this schema: a stranger's ids are NOT_FOUND).
EXPECTED_CODES = {"BAD_USER_INPUT", "NOT_FOUND", "UNAUTHENTICATED"}
VIEWERS = ("owner", "stranger", "anonymous")
# Times both apps are asked again when their first answers differ.
ASK_AGAIN = 4


@dataclass
class Tally:
    """What the examples did, for the figures the last test checks and prints."""

    examples: int = 0
    planned: int = 0
    subscriptions: int = 0
    events: int = 0
    falls_back: int = 0
    asked_again: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    viewers: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    types: set[str] = field(default_factory=set)
    fields: set[tuple[str, str]] = field(default_factory=set)


@dataclass(repr=False)
class Apps:
    """The state, and the app twice on it: ``planned`` (EXECUTION_PLANS on, its cache ``plans``) and ``plain``."""

    state: DifferentialState
    planned: httpx.AsyncClient
    plain: httpx.AsyncClient
    plans: PlanCache
    pool: asyncpg.Pool
    tokens: dict[str, str | None]
    pools: Pools
    tally: Tally = field(default_factory=Tally)

    def __repr__(self) -> str:  # (hypothesis prints the test's arguments with a failing example)
        return f"Apps(owner={self.state.owner}, stranger={self.state.stranger})"


@pytest.fixture(scope="module")
async def state(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DifferentialState]:
    data_dir: Path = tmp_path_factory.mktemp("differential")
    async with differential_state(server_url, data_dir) as built:
        yield built


def pools_of(state: DifferentialState) -> Pools:
    ids = state.ids
    return Pools(
        ids=state.all_ids(),
        cursors=state.cursors,
        names=state.names,
        not_characters=ids["job"] + ids["workspace"] + ids["library"] + ids["model"],
        not_library_assets=ids["character"] + ids["job"] + ids["workspace"] + ids["model"],
        character_ids=ids["character"],
        canceled_job=state.canceled_job,
        finished_jobs=state.finished_jobs,
        saved_workspace_assets=state.saved_workspace_assets,
        draft_workspace_asset=state.draft_workspace_asset,
        unavailable_models=state.unavailable_models,
        ended_jobs=(*state.finished_jobs, state.canceled_job),
    )


@pytest.fixture(scope="module")
async def apps(state: DifferentialState) -> AsyncIterator[Apps]:
    # generate_after=0: the plans' generated code from an operation's first run (graph/plans/generate.py), the way a
    # client's repeated document runs; closures still run what the generator leaves to them
    plans = PlanCache(generate_after=0)
    settings = state.settings
    async with (
        app_client(replace(settings, execution_plans=True), plans=plans) as planned,
        app_client(replace(settings, execution_plans=False)) as plain,
    ):
        pool = await create_pool(settings.database_url or "", max_size=2)
        try:
            tokens = {
                "owner": token_for(state.owner, ttl=timedelta(days=1)),
                "stranger": token_for(state.stranger, ttl=timedelta(days=1)),
                "anonymous": None,
            }
            yield Apps(state, planned, plain, plans, pool, tokens, pools_of(state))
        finally:
            await pool.close()


async def answer(http: httpx.AsyncClient, operation: Operation, token: str | None) -> tuple[int, str]:
    """The status and the body as JSON text (keys in the answer's order), its errors' request ids taken out."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await http.post(
        "/graphql", json={"query": operation.document, "variables": operation.variables}, headers=headers
    )
    body = request_id_checked(response.json(), response.headers)
    if isinstance(body, dict) and isinstance(body.get("errors"), list):
        # The spec sets no order for errors, and graphql-core lists concurrent root fields' errors as they happen to
        # finish: compared in a canonical order, every error's own text still byte for byte.
        body["errors"] = sorted(body["errors"], key=lambda error: json.dumps(error, sort_keys=True))
    return response.status_code, json.dumps(body, indent=1)


def codes_of(text: str) -> list[str]:
    body: Any = json.loads(text)
    return [str((error.get("extensions") or {}).get("code")) for error in body.get("errors") or []]


# What both differential tests run under (each adds its number of examples): fixed seeds unless
# PLAN_DIFFERENTIAL_EXAMPLES asks for more, no example folder left in the work tree (a failure prints its
# reproduction), and no explain phase.
DIFFERENTIAL_SETTINGS = settings(
    deadline=None,
    database=None,
    derandomize=not EXAMPLES,
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)


@settings(
    DIFFERENTIAL_SETTINGS,
    max_examples=EXAMPLES or DEFAULT_EXAMPLES,
    suppress_health_check=[*DIFFERENTIAL_SETTINGS.suppress_health_check, HealthCheck.large_base_example],
)
@given(data=st.data())
async def test_every_drawn_operation_is_answered_alike_with_and_without_plans(apps: Apps, data: st.DataObject) -> None:
    # given a valid operation over the schema and a viewer
    operation = data.draw(operations(apps.pools), label="operation")
    viewer = data.draw(st.sampled_from(VIEWERS), label="viewer")
    token = apps.tokens[viewer]
    rows = await fingerprint(apps.pool) if operation.kind == "mutation" else None

    # when both apps answer it, on the same rows
    before = apps.plans.stats.planned
    planned = [await answer(apps.planned, operation, token)]
    ran_on_plan = apps.plans.stats.planned == before + 1
    plain = [await answer(apps.plain, operation, token)]
    while not set(planned) & set(plain) and len(planned) <= ASK_AGAIN:
        # (an answer graphql-core gives one time but not the next: see the module's docstring)
        planned.append(await answer(apps.planned, operation, token))
        plain.append(await answer(apps.plain, operation, token))

    # then the answer with plans is one graphql-core gives, byte for byte (see the docstring for "one")
    assert set(planned) & set(plain), (
        f"with plans (status {planned[0][0]}):\n{planned[0][1]}\nwithout (status {plain[0][0]}):\n{plain[0][1]}"
    )
    # and the operation ran on its plan, unless plans leave it to graphql-core by design
    assert ran_on_plan or operation.falls_back, f"graphql-core ran it: {apps.plans.stats}"
    # and nothing crashed, nothing changed
    codes = codes_of(plain[0][1])
    assert "INTERNAL_SERVER_ERROR" not in codes, plain[0][1]
    if rows is not None:
        assert await fingerprint(apps.pool) == rows, "the mutation changed the state"

    tally = apps.tally
    tally.examples += 1
    tally.planned += ran_on_plan
    tally.falls_back += operation.falls_back
    tally.asked_again += len(planned) > 1
    tally.kinds[operation.kind] += 1
    tally.viewers[viewer] += 1
    tally.codes.update(codes)
    tally.statuses[plain[0][0]] += 1
    tally.types |= operation.types
    tally.fields |= operation.fields


@dataclass(repr=False)
class Sockets:
    """The app twice over real websockets (uvicorn), a socket of each viewer's open on each."""

    apps: Apps
    planned: dict[str, GraphQLSocket]
    plain: dict[str, GraphQLSocket]
    plans: PlanCache

    def __repr__(self) -> str:
        return "Sockets()"


@pytest.fixture(scope="module")
async def sockets(apps: Apps) -> AsyncIterator[Sockets]:
    plans = PlanCache(generate_after=0)  # (generated code from the first event, as in ``apps``)
    settings = apps.state.settings
    async with contextlib.AsyncExitStack() as stack:
        opened: dict[str, dict[str, GraphQLSocket]] = {}
        for side, on, cache in (("planned", True, plans), ("plain", False, None)):
            app = create_app(replace(settings, execution_plans=on), plans=cache)
            config = uvicorn_config(app, host="127.0.0.1", port=free_port(), log_level="warning")
            served = await stack.enter_async_context(serve_uvicorn(config))
            opened[side] = {
                viewer: await stack.enter_async_context(
                    GraphQLSocket.open(served.url("/graphql"), token=apps.tokens[viewer])
                )
                for viewer in ("owner", "stranger")
            }
        yield Sockets(apps, opened["planned"], opened["plain"], plans)


async def sent(socket: GraphQLSocket, operation: Operation) -> str:
    """What the server sends for the subscription until it ends (``next`` payloads, an ``error``), as JSON text,
    without the operation's id and the errors' request ids (each socket numbers its own)."""
    operation_id = await socket.subscribe(operation.document, operation.variables)
    messages = []
    for message in await socket.results_until_complete(operation_id):
        payload = message.get("payload")
        errors = payload if isinstance(payload, list) else (payload or {}).get("errors") or []
        for error in errors:
            (error.get("extensions") or {}).pop("requestId", None)
        messages.append({"type": message["type"], "payload": payload})
    return json.dumps(messages, indent=1)


def executed(message: dict[str, Any]) -> bool:
    """Whether a message is an event's execution (data, or errors at a path) rather than the subscription's refusal
    (errors without a path, sent before any event)."""
    payload = message["payload"]
    if message["type"] != "next" or not isinstance(payload, dict):
        return False
    return payload.get("data") is not None or any("path" in error for error in payload.get("errors") or [])


@settings(DIFFERENTIAL_SETTINGS, max_examples=SUBSCRIPTION_EXAMPLES)
@given(data=st.data())
async def test_every_drawn_subscription_sends_alike_with_and_without_plans(
    sockets: Sockets, data: st.DataObject
) -> None:
    # given a subscription that ends by itself (an ended job's, or one refused), and a viewer with a socket open
    operation = data.draw(subscriptions(sockets.apps.pools), label="operation")
    viewer = data.draw(st.sampled_from(("owner", "owner", "stranger")), label="viewer")

    # when each app's socket runs it to its end
    before = sockets.plans.stats.planned
    planned = [await sent(sockets.planned[viewer], operation)]
    events_planned = sockets.plans.stats.planned - before
    plain = [await sent(sockets.plain[viewer], operation)]
    while not set(planned) & set(plain) and len(planned) <= ASK_AGAIN:
        planned.append(await sent(sockets.planned[viewer], operation))
        plain.append(await sent(sockets.plain[viewer], operation))

    # then the messages are the same, and each event the planned app sent ran on the plan
    assert set(planned) & set(plain), f"with plans:\n{planned[0]}\nwithout:\n{plain[0]}"
    events = sum(map(executed, json.loads(planned[0])))
    # (an operation plans leave to graphql-core by design, a condition's variable given null, runs no event on one)
    assert events_planned == (0 if operation.falls_back else events), (events_planned, planned[0])
    assert "INTERNAL_SERVER_ERROR" not in plain[0], plain[0]
    sockets.apps.tally.subscriptions += 1
    sockets.apps.tally.events += events


async def test_the_drawn_operations_covered_the_schema_and_ran_on_plans(apps: Apps) -> None:
    tally = apps.tally
    if tally.examples == 0:
        pytest.skip("the differential test did not run in this session")
    # given the examples the differential tests ran (the tests before this one)
    figures = (
        f"{tally.examples} operations ({dict(tally.kinds)}), {tally.subscriptions} subscriptions ({tally.events} "
        f"events), viewers {dict(tally.viewers)}, statuses "
        f"{dict(tally.statuses)}; {tally.planned} ran on plans, {tally.falls_back} left to graphql-core by design, "
        f"{tally.asked_again} asked again; error codes {dict(tally.codes)}; plans {apps.plans.stats}; "
        f"documents thrown away {sum(rejected.values())}: {dict(rejected.most_common(5))}"
    )
    print(figures)

    # then every object type and every error code a resolver raises was met, and most operations ran on plans
    types = object_types()
    every_field = {(name, field_name) for name, type_ in types.items() for field_name in type_.fields}
    print(f"fields selected: {len(tally.fields & every_field)} of {len(every_field)}; never:",
          sorted(every_field - tally.fields))
    assert set(types) <= tally.types, (set(types) - tally.types, figures)
    assert len(tally.fields & every_field) >= 0.9 * len(every_field), figures
    assert set(tally.codes) >= EXPECTED_CODES, figures
    assert tally.planned >= 0.8 * tally.examples, figures
    # and the plans' generated code ran, not only their closures
    assert apps.plans.stats.generated > 0, figures
    assert tally.subscriptions == 0 or tally.events > 0, figures
    assert tally.asked_again <= max(2, tally.examples // 50), figures
