"""A real, throwaway Redis server for the tests: started once per session on a free port, stopped at the end.

Nothing is mocked: the fixture runs the `redis-server` binary (Debian package `redis-server`) with persistence
off, bound to 127.0.0.1. Without the binary the fixture fails, so a missing server cannot pass for green tests.

`RedisServer` (and the `redis_proc` fixture) is a server of a test's own that the test may kill and start again on
the same port, with its data (an append-only file synced on every write) or without it. `SentinelServer` is the
same binary run as a Sentinel that monitors such a server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

STARTUP_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=0.5) as sock:
            sock.sendall(b'PING\r\n')
            return sock.recv(64).startswith(b'+PONG')
    except OSError:
        return False


def _launch(args: list[str], port: int, what: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a server and wait until it answers PING on `port`; if it exits or stays silent, kill it and raise
    `RuntimeError` naming `what` it is (with its log, when given)."""
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not _answers_ping(port):
        if process.poll() is not None:
            output = '' if log is None else ':\n' + (log.read_text(errors='replace') if log.exists() else '')
            raise RuntimeError(f'{what} exited with code {process.returncode}{output}')
        if time.monotonic() > deadline:
            _kill(process)
            raise RuntimeError(f'{what} did not answer PING within {STARTUP_TIMEOUT:g} s')
        time.sleep(0.01)
    return process


def _kill(process: subprocess.Popen[bytes] | None) -> None:
    """Kill a server at once (SIGKILL), as a crash would, and reap it."""
    if process is not None:
        process.kill()
        process.wait()


@pytest.fixture(scope='session')
def redis_url() -> Iterator[str]:
    """Start `redis-server` on a free local port, yield its URL, and stop it when the session ends."""
    binary = shutil.which('redis-server')
    if binary is None:
        pytest.fail(
            'redis-server is not on PATH; the Redis bus tests need a real server '
            '(on Debian/Ubuntu: apt-get install -y redis-server)',
            pytrace=False,
        )
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix='redis-test-') as directory:
        log = Path(directory) / 'redis.log'
        args = [binary, '--port', str(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']
        try:
            process = _launch([*args, '--dir', directory, '--logfile', str(log)], port, 'redis-server', log)
        except RuntimeError as error:
            pytest.fail(str(error), pytrace=False)
        try:
            yield f'redis://127.0.0.1:{port}/0'
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class RedisServer:
    """A `redis-server` of one test (or one chaos run): killed and started again at will, on the same port.

    Its data lives in an append-only file synced on every write, so a restart with `keep_data=True` comes back with
    everything acknowledged before the kill; `keep_data=False` starts from an empty database.
    """

    port: int = field(default_factory=_free_port)
    workdir: tempfile.TemporaryDirectory[str] = field(
        default_factory=lambda: tempfile.TemporaryDirectory(prefix='redis-chaos-')
    )
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL (the same across restarts)."""
        return f'redis://127.0.0.1:{self.port}/0'

    def start(self) -> None:
        """Start the server and wait until it answers."""
        binary = shutil.which('redis-server')
        if binary is None:
            raise RuntimeError('redis-server is not on PATH (on Debian/Ubuntu: apt-get install -y redis-server)')
        directory = self.workdir.name
        self.process = _launch(
            [
                *(binary, '--port', str(self.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes'),
                *('--appendfsync', 'always', '--dir', directory, '--logfile', str(Path(directory) / 'redis.log')),
            ],
            self.port,
            'redis-server',
        )

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        _kill(self.process)
        self.process = None

    def wipe(self) -> None:
        """Delete the data of a killed server: it starts again from an empty database."""
        assert self.process is None, 'kill the server first'
        for path in Path(self.workdir.name).iterdir():
            if path.name != 'redis.log':
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def restart(self, *, keep_data: bool) -> None:
        """Kill the server and start it again, with its data or from an empty database."""
        self.kill()
        if not keep_data:
            self.wipe()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its files."""
        self.kill()
        self.workdir.cleanup()


@dataclass
class SentinelServer:
    """A `redis-server --sentinel` (the same binary) monitoring one master as `service`, for the Sentinel tests.

    With no replicas there is nothing to fail over to: while the master is down the Sentinel reports it down, and
    once it is back (on the same port) it names the same address again.
    """

    master_port: int
    service: str = 'mymaster'
    port: int = field(default_factory=_free_port)
    workdir: tempfile.TemporaryDirectory[str] = field(
        default_factory=lambda: tempfile.TemporaryDirectory(prefix='redis-sentinel-')
    )
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the Sentinel and wait until it answers (it writes its state into its own config file)."""
        binary = shutil.which('redis-server')
        if binary is None:
            raise RuntimeError('redis-server is not on PATH (on Debian/Ubuntu: apt-get install -y redis-server)')
        directory = Path(self.workdir.name)
        config = directory / 'sentinel.conf'
        config.write_text(
            '\n'.join(
                [
                    f'port {self.port}',
                    'bind 127.0.0.1',
                    f'dir {directory}',
                    f'logfile {directory / "sentinel.log"}',
                    f'sentinel monitor {self.service} 127.0.0.1 {self.master_port} 1',
                    f'sentinel down-after-milliseconds {self.service} 1000',
                    f'sentinel failover-timeout {self.service} 2000',
                    '',
                ]
            )
        )
        self.process = _launch(
            [binary, str(config), '--sentinel'], self.port, 'redis-server --sentinel', directory / 'sentinel.log'
        )

    def close(self) -> None:
        """Stop the Sentinel and remove its files."""
        _kill(self.process)
        self.process = None
        self.workdir.cleanup()


@pytest.fixture
def redis_proc() -> Iterator[RedisServer]:
    """A server of this test's own, which the test may kill and restart."""
    if shutil.which('redis-server') is None:
        pytest.fail('redis-server is not on PATH; the Redis fault tests need a real server', pytrace=False)
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
