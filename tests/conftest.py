"""Test-wide guards: no test may reach the network, and TensorFlow stays quiet and small."""

from __future__ import annotations

import os
import socket
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One thread per TensorFlow and BLAS pool in every pytest worker (and the notebook kernels and
# child processes that inherit this environment), as `transferkit.testing.child_env` gives CLI
# children: three workers share the CI machine's two cores, where idle pool threads spin for work.
# Results do not depend on it (the determinism tests compare runs made under the same settings).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# An empty Keras home: no test may silently pass thanks to weights a developer downloaded once.
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="transferkit-keras-home-")

import pytest

_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture(autouse=True)
def no_network(request, monkeypatch):
    """Fail any test that tries to open a network connection.

    The attempt itself raises OSError (as an offline machine would), and the test then fails at
    teardown even if the code under test caught the error. Tests that check the offline error
    path on purpose carry ``@pytest.mark.network_attempt_expected``.
    """
    attempts: list[str] = []

    def guarded_connect(sock, address):
        if sock.family == socket.AF_UNIX:
            return _real_connect(sock, address)
        attempts.append(f"connect {address!r}")
        raise OSError(f"network disabled in tests (tried to connect to {address!r})")

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host in (None, "localhost", "127.0.0.1", "::1"):
            return _real_getaddrinfo(host, *args, **kwargs)
        attempts.append(f"resolve {host!r}")
        raise socket.gaierror(f"network disabled in tests (tried to resolve {host!r})")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts
    if attempts and not request.node.get_closest_marker("network_attempt_expected"):
        pytest.fail(f"test tried to use the network: {attempts}")
