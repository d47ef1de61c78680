"""Shared by the conformance tests: starting `hss-simulator` as its own process.

The binary comes from HSS_SIMULATOR_BIN (default <repo>/target/debug/hss-simulator). It is started
with `--listen 127.0.0.1:0` plus the test's own flags, and its first stdout line must be
`listening on http://IP:PORT`.
"""
import os
import queue
import re
import subprocess
import threading
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "hss-simulator"

STARTUP_TIMEOUT_S = 30.0
LISTENING_RE = re.compile(r"^listening on (http://\S+:\d+)\s*$")


class RunningSimulator:
    """One `hss-simulator` process: its base URL, its stderr log, and stop()."""

    def __init__(self, binary, args, log_dir):
        self.stderr_path = log_dir / "stderr.log"
        self._stderr_file = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "--listen", "127.0.0.1:0", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr_file,
        )
        self._lines = queue.Queue()
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        self.url = self._read_url()

    def _pump_stdout(self):  # keep draining so the child never blocks on a full pipe
        for raw in self.proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace"))
        self._lines.put(None)

    def _read_url(self):
        try:
            first = self._lines.get(timeout=STARTUP_TIMEOUT_S)
        except queue.Empty:
            self.stop()
            pytest.fail("simulator printed nothing within %.0fs; stderr:\n%s" % (STARTUP_TIMEOUT_S, self.stderr()))
        match = LISTENING_RE.match(first or "")
        if not match:
            self.stop()
            pytest.fail("simulator's first stdout line was %r, expected 'listening on http://IP:PORT'; stderr:\n%s"
                        % (first, self.stderr()))
        return match.group(1)

    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if not self._stderr_file.closed:
            self._stderr_file.close()


@pytest.fixture(scope="session")
def launch_simulator(tmp_path_factory):
    """`launch_simulator(*flags)` starts a simulator and returns its RunningSimulator; every one
    still running is stopped at the end of the session (or earlier by its own stop())."""
    binary = Path(os.environ.get("HSS_SIMULATOR_BIN") or DEFAULT_BIN)
    if not binary.is_file():
        pytest.fail("simulator binary not found at %s (build it: cargo build -p hss-simulator; or set HSS_SIMULATOR_BIN)" % binary)
    started = []

    def launch(*args):
        sim = RunningSimulator(binary, [str(a) for a in args], tmp_path_factory.mktemp("simulator"))
        started.append(sim)
        return sim

    try:
        yield launch
    finally:
        for sim in started:
            sim.stop()
