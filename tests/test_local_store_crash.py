"""A process killed in the middle of a write never leaves half an object under its name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from storage.objects.local import STALE_TEMPORARY_SECONDS, LocalObjectStore
from storage.objects.paths import Bucket
from storage.objects.tokens import ObjectTokens

WRITER = """
import asyncio, sys
from pathlib import Path
from storage.objects.local import LocalObjectStore
from storage.objects.paths import Bucket
from storage.objects.tokens import ObjectTokens

store = LocalObjectStore(Path(sys.argv[1]), public_url="http://x", tokens=ObjectTokens(b"k"))
data = b"new" * (96 * 1024 * 1024)
print("ready", flush=True)
asyncio.run(store.put(Bucket.USER_LIBRARY, "u/portrait.png", data))
print("done", flush=True)
"""


def store_at(root: Path) -> LocalObjectStore:
    return LocalObjectStore(root, public_url="http://x", tokens=ObjectTokens(b"k"))


def test_a_writer_killed_mid_write_leaves_the_old_object_whole(tmp_path: Path) -> None:
    # given: a complete object, and a process about to overwrite it with 288 MB
    old = b"old portrait" * 1000
    target = tmp_path / "user-library" / "u" / "portrait.png"
    target.parent.mkdir(parents=True)
    target.write_bytes(old)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    # when: it is SIGKILLed once its temporary file has started to fill
    temporaries = tmp_path / ".tmp"
    deadline = time.monotonic() + 30
    while not any(entry.stat().st_size > 0 for entry in os.scandir(temporaries)):
        assert time.monotonic() < deadline, "the writer never started writing"
        assert writer.poll() is None, "the writer finished before it could be killed"
        time.sleep(0.0005)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    # then: the object under its name is the old one, whole; the partial write is only a temporary file
    assert target.read_bytes() == old
    assert list(temporaries.iterdir()), "the partial write should be left as a temporary file"


def test_stale_temporary_files_are_removed_at_start_and_fresh_ones_kept(tmp_path: Path) -> None:
    # given: a crash's leftover from long ago, and a write in progress right now
    store_at(tmp_path)
    stale = tmp_path / ".tmp" / "put-stale"
    fresh = tmp_path / ".tmp" / "put-fresh"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    long_ago = time.time() - STALE_TEMPORARY_SECONDS - 60
    os.utime(stale, (long_ago, long_ago))
    # when: a store starts on the same folder
    store_at(tmp_path)
    # then
    assert not stale.exists()
    assert fresh.exists()


async def test_objects_are_readable_by_others_and_not_left_in_tmp(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    await store.put(Bucket.USER_LIBRARY, "u/a.png", b"x")
    assert (tmp_path / "user-library" / "u" / "a.png").stat().st_mode & 0o777 == 0o644
    assert list((tmp_path / ".tmp").iterdir()) == []
