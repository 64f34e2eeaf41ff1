"""`portraits serve` as a subprocess, for tests of the real command and of several server processes."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

from tests.support import free_port

READY = "Portraits is ready."


class Server:
    """A `python -m server.cli serve` (or another command) subprocess whose output is read line by line in a thread."""

    # Subclasses that set it read stderr (the log) into ``log_lines`` instead of mixing it into the output.
    stderr_apart: ClassVar[bool] = False

    def __init__(self, data_dir: Path, *, command: str = "serve", **env: str) -> None:
        self.command = command
        stderr_apart = self.stderr_apart
        self.port = free_port()
        full_env = {
            **os.environ,
            "PORTRAITS_DATA_DIR": str(data_dir),
            "PORT": str(self.port),
            "LOG_LEVEL": "info",
            **env,
        }
        for name in ("DATABASE_URL", "JWT_SECRET", "PORTRAITS_ENV"):
            if name not in env:
                full_env.pop(name, None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", command],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if stderr_apart else subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.log_lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.log_reader: threading.Thread | None = None
        if stderr_apart:
            self.log_reader = threading.Thread(target=self._read_log, daemon=True)
            self.log_reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log_lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """The first line holding ``text``, printed already or within ``timeout`` seconds."""
        for line in self.output:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            if text in line:
                return line
        raise AssertionError(f"never printed {text!r}; output:\n" + "\n".join(self.output))

    def rest_of_output(self) -> str:
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "\n".join(self.output)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def dev_token(self) -> str:
        line = self.wait_for('"Authorization": "Bearer ')
        match = re.search(r"Bearer ([\w.-]+)", line)
        assert match is not None
        return match[1]

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)


class LoggedServer(Server):
    """A ``Server`` whose stderr, where the log goes, is kept apart in ``log_lines``; stdout is the output."""

    stderr_apart = True
