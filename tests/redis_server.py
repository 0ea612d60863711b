"""A real, throwaway Redis server for the tests: started once per session on a free port, stopped at the end.

Nothing is mocked: the fixture runs the `redis-server` binary (Debian package `redis-server`) with persistence
off, bound to 127.0.0.1. Without the binary the fixture fails, so a missing server cannot pass for green tests.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
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
    workdir = tempfile.TemporaryDirectory(prefix='redis-test-')
    log = Path(workdir.name) / 'redis.log'
    process = subprocess.Popen(
        [
            binary,
            '--port',
            str(port),
            '--bind',
            '127.0.0.1',
            '--save',
            '',
            '--appendonly',
            'no',
            '--dir',
            workdir.name,
            '--logfile',
            str(log),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _answers_ping(port):
            if process.poll() is not None:
                output = log.read_text(errors='replace') if log.exists() else ''
                pytest.fail(f'redis-server exited with code {process.returncode}:\n{output}', pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f'redis-server did not answer PING within {STARTUP_TIMEOUT:g} s', pytrace=False)
            time.sleep(0.02)
        yield f'redis://127.0.0.1:{port}/0'
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        workdir.cleanup()
