"""`portraits serve` whose embedded PostgreSQL is killed: it is reaped and started again, or serve exits clearly.

Real processes throughout: a `portraits serve` on its own embedded PostgreSQL,
the postmaster SIGKILLed by its pid from ``postmaster.pid``, and the serve
process's children read from /proc (a zombie is a child in state Z).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import uuid
from pathlib import Path

import httpx

from tests.realtime_support import CHARACTER_IMAGE_UPDATED, GraphQLSocket, data_of
from tests.server_process import READY, Server
from tests.support import TEST_JWT_SECRET, subscriptions_live
from tests.test_cli_serve import graphql, postmaster_pid, wait_until_gone
from tests.test_database_outage import until_status
from tests.test_realtime_processes import CREATE, GENERATE, apost

LIST = "{ characters { edges { node { name } } } }"


def children_of(pid: int) -> dict[int, str]:
    """The process's children and their state letters (R, S, Z, ...), from /proc."""
    children: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after its last ')'.
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid:
            children[int(entry.name)] = state
    return children


def until_answering(server: Server, token: str, timeout: float = 60) -> tuple[float, float]:
    """Seconds until /healthz says 200, and until a GraphQL query answers without errors; fails after ``timeout``."""
    started = time.monotonic()
    deadline = started + timeout
    healthy_after: float | None = None
    while time.monotonic() < deadline:
        if healthy_after is None:
            try:
                if httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200:
                    healthy_after = time.monotonic() - started
            except httpx.TransportError:
                pass
        if healthy_after is not None:
            response = httpx.post(
                f"{server.url}/graphql", json={"query": LIST}, headers={"Authorization": f"Bearer {token}"}, timeout=5
            )
            if response.status_code == 200 and "errors" not in response.json():
                return healthy_after, time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"serve did not answer again within {timeout} s; output:\n{server.rest_of_output()}")


def test_a_killed_embedded_postgres_is_reaped_and_started_again_and_serve_recovers(
    tmp_path: Path, servers: list[Server]
) -> None:
    # given `serve` on its embedded PostgreSQL, with a character stored
    server = Server(tmp_path)
    servers.append(server)
    server.wait_for(READY)
    token = server.dev_token()
    created = graphql(server, token, 'mutation { createCharacter(input: {name: "Kept", description: "d"}) { id } }')
    assert "errors" not in created
    character_id = created["data"]["createCharacter"]["id"]

    for round_number in (1, 2):
        # when its postmaster is SIGKILLed
        killed = postmaster_pid(tmp_path)
        os.kill(killed, signal.SIGKILL)

        # then serve reaps it, starts a new one, and answers again: /healthz and GraphQL, the data still there
        healthy_after, answering_after = until_answering(server, token)
        print(
            f"round {round_number}: /healthz 200 {healthy_after:.2f} s and GraphQL answering "
            f"{answering_after:.2f} s after the SIGKILL"
        )
        assert wait_until_gone(killed)
        restarted = postmaster_pid(tmp_path)
        assert restarted != killed
        listed = graphql(server, token, LIST)
        assert listed["data"]["characters"]["edges"] == [{"node": {"name": "Kept"}}]
        # and no child of serve is a zombie: the new postmaster is its one child, and it is alive
        children = children_of(server.process.pid)
        assert children == {restarted: children[restarted]} and children[restarted] != "Z", children
        assert f"runs again (pid {restarted})" in server.wait_for(f"runs again (pid {restarted})")

    # and its LISTEN connection came back too: a subscriber hears a change made after the restarts
    image = asyncio.run(image_change_heard(server, token, character_id, "https://example.com/after.png"))
    assert image == "https://example.com/after.png"
    # and Ctrl-C still stops serve and the restarted PostgreSQL in order
    last = postmaster_pid(tmp_path)
    assert server.stop(signal.SIGINT) == 0
    assert wait_until_gone(last)
    assert "embedded PostgreSQL stopped" in server.rest_of_output()


def test_serve_exits_non_zero_with_a_clear_message_when_its_postgres_cannot_be_started_again(
    tmp_path: Path, servers: list[Server]
) -> None:
    # given `serve` on its embedded PostgreSQL, allowed 2 restarts
    server = Server(tmp_path, EMBEDDED_POSTGRES_MAX_RESTARTS="2")
    servers.append(server)
    server.wait_for(READY)

    # when its data folder stops being one (the running server does not notice) and its postmaster is SIGKILLed
    (tmp_path / "pgdata" / "PG_VERSION").unlink()
    killed = postmaster_pid(tmp_path)
    started = time.monotonic()
    os.kill(killed, signal.SIGKILL)

    # then serve tries twice, gives up, shuts down and exits non-zero, saying why
    code = server.process.wait(60)
    print(f"serve exited {time.monotonic() - started:.2f} s after the SIGKILL, with code {code}")
    output = server.rest_of_output()
    assert code == 1, output
    assert "portraits: the embedded PostgreSQL in" in output
    assert "2 restart(s) within 300 s did not keep it running" in output
    assert "is not a valid data directory" in output
    assert output.count("starting the embedded PostgreSQL again failed") == 2
    assert wait_until_gone(killed)


async def image_change_heard(server: Server, token: str, character_id: str, image_url: str) -> str:
    """Subscribe to the character's image, change it through the API, and return the image the subscriber got."""
    async with GraphQLSocket.open(f"ws://127.0.0.1:{server.port}/graphql", token=token) as socket:
        await socket.subscribe(CHARACTER_IMAGE_UPDATED, {"characterId": character_id})
        await subscriptions_live(server.url, 1)
        update = f'mutation {{ updateCharacter(id: "{character_id}", input: {{imageUrl: "{image_url}"}}) {{ id }} }}'
        await asyncio.to_thread(graphql, server, token, update)
        heard: str = data_of(await socket.next_result(timeout=30), "characterImageUpdated")["imageUrl"]
        return heard


def test_a_worker_restarts_its_embedded_postgres_within_the_bound_and_exits_non_zero_past_it(
    tmp_path: Path, servers: list[Server]
) -> None:
    # given `portraits worker` on its own embedded PostgreSQL, allowed one restart
    worker = Server(tmp_path, command="worker", EMBEDDED_POSTGRES_MAX_RESTARTS="1")
    servers.append(worker)
    worker.wait_for("portraits worker:")

    # when its postmaster is SIGKILLed, it is started again, and the dead one is reaped
    first = postmaster_pid(tmp_path)
    os.kill(first, signal.SIGKILL)
    worker.wait_for("the embedded PostgreSQL runs again")
    second = postmaster_pid(tmp_path)
    assert second != first and wait_until_gone(first)
    children = children_of(worker.process.pid)
    assert children == {second: children[second]} and children[second] != "Z", children

    # when it is killed again within the window, the worker stops its workers and exits non-zero, saying why
    os.kill(second, signal.SIGKILL)
    code = worker.process.wait(60)
    output = worker.rest_of_output()
    assert code == 1, output
    assert "portraits: the embedded PostgreSQL in" in output
    assert "1 restart(s) within 300 s did not keep it running" in output and "exited with code -9" in output
    assert re.search(r"pipeline\.worker: \S+ stopped", output), output


async def test_a_generation_in_flight_when_the_embedded_postgres_is_killed_completes_once(
    tmp_path: Path, servers: list[Server], alice: uuid.UUID
) -> None:
    # given `serve` on its embedded PostgreSQL, its worker inside, a slow local provider, and a portrait job running
    server = Server(tmp_path, JWT_SECRET=TEST_JWT_SECRET, LOCAL_RENDER_LATENCY_MS="2000")
    servers.append(server)
    await asyncio.to_thread(server.wait_for, READY)
    character_id = (await apost(server, alice, CREATE, {"input": {"name": "Iris", "description": "A map."}}))[
        "createCharacter"
    ]["id"]
    job_id = (await apost(server, alice, GENERATE, {"id": character_id}))["generateCharacterPortrait"]["id"]
    await until_status(server, alice, job_id, "PROCESSING", timeout=30)

    # when the postmaster is SIGKILLed while the provider renders
    os.kill(postmaster_pid(tmp_path), signal.SIGKILL)
    killed_at = time.monotonic()

    # then the job completes, once, after PostgreSQL is started again (well within its 30 s lease)
    job = await until_status(server, alice, job_id, "COMPLETED", timeout=25)
    print(f"the job completed {time.monotonic() - killed_at:.2f} s after the SIGKILL")
    outcomes = [attempt["outcome"] for attempt in job["attemptHistory"]]
    assert outcomes[-1] == "COMPLETED" and outcomes.count("COMPLETED") == 1, job
    library = await apost(server, alice, "{ libraryAssets { edges { node { id } } } }", {})
    assert len(library["libraryAssets"]["edges"]) == 1
    assert server.stop(signal.SIGINT) == 0
