"""The daemon as a real process (``python -m exporter run``) on a port it picks itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["DaemonProcess"]

REPO = Path(__file__).resolve().parents[2]


class DaemonProcess:
    """Run the CLI daemon with ``env`` on ``127.0.0.1:0``; its JSON log goes to ``log``.

    The port is read back from the ``exporter_started`` log line, so nothing else can take
    it between choosing and binding. Blocking methods: call them with ``asyncio.to_thread``.
    """

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = {**os.environ, **env, "INGEST_LOG_FORMAT": "json"}
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def start(self, timeout: float = 20.0) -> str:
        """Start the daemon and return its base URL once it listens."""
        with self.log.open("wb") as sink:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "exporter", "run", "--web.listen-address", "127.0.0.1:0"],
                cwd=REPO,
                env=self._env,
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            address = self._listen_address()
            if address:
                self.base_url = f"http://{address}"
                return self.base_url
            assert self._process.poll() is None, f"daemon exited:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.05)  # a process's log file has no readiness event to wait on
        raise AssertionError(f"daemon did not start within {timeout}s")

    def _listen_address(self) -> str | None:
        for line in self.log.read_text(errors="replace").splitlines():
            if '"exporter_started"' in line:
                return str(json.loads(line)["listen_address"])
        return None

    def stop(self) -> int:
        """Send SIGTERM, wait for the exit (kill after 15 s) and return the exit code."""
        process, self._process = self._process, None
        if process is None:
            return 0
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
