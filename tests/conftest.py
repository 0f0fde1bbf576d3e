"""Test-wide guards: no test may reach the network, and TensorFlow stays quiet and small."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile

import pytest

import transferkit  # noqa: F401  (its import-time settings, before any test module loads TensorFlow)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One thread per TensorFlow and BLAS pool in every pytest worker (and the notebook kernels and
# child processes that inherit this environment), as `transferkit.testing.child_env` gives CLI
# children: three workers share the CI machine's two cores, where idle pool threads spin for work.
# Results do not depend on it (the determinism tests compare runs made under the same settings).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# What the suite's processes leave in the temporary folder (TensorFlow's autograph sources, TFDS's
# scratch folders: hundreds a run) goes in one folder of the session's, removed when it ends. xdist
# workers, CLI children and notebook kernels inherit TMPDIR, so theirs nest inside it; pytest's own
# tmp_path folders stay where pytest keeps them.
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
_SCRATCH = tempfile.mkdtemp(prefix="transferkit-tests-")
os.environ["TMPDIR"] = _SCRATCH
tempfile.tempdir = None  # gettempdir() reads TMPDIR again
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
# An empty Keras home: no test may silently pass thanks to weights a developer downloaded once.
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="keras-home-")

_real_connect = socket.socket.connect
_real_getaddrinfo = socket.getaddrinfo
_NETWORK = pytest.StashKey[list]()
_attempts: list[list[str]] = [[]]
"""The running test's network attempts: a fresh list per test (:func:`pytest_runtest_protocol`), which
also takes what the module and session fixtures it sets up try."""


def _guarded_connect(sock, address):
    if sock.family == socket.AF_UNIX:
        return _real_connect(sock, address)
    _attempts[0].append(f"connect {address!r}")
    raise OSError(f"network disabled in tests (tried to connect to {address!r})")


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host in (None, "localhost", "127.0.0.1", "::1"):
        return _real_getaddrinfo(host, *args, **kwargs)
    _attempts[0].append(f"resolve {host!r}")
    raise socket.gaierror(f"network disabled in tests (tried to resolve {host!r})")


# For the whole process, not per test: a fit in a module fixture (shared by several tests) runs
# before any function-scoped fixture of the test that first asks for it, and is guarded too.
socket.socket.connect = _guarded_connect
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def no_network(request):
    """Fail any test that tries to open a network connection, itself or in the fixtures it sets up.

    The attempt itself raises OSError (as an offline machine would), and the test then fails at
    teardown even if the code under test caught the error. Tests that check the offline error
    path on purpose carry ``@pytest.mark.network_attempt_expected``. Yields the test's attempts.
    """
    attempts = request.node.stash.get(_NETWORK, _attempts[0])
    yield attempts
    if attempts and not request.node.get_closest_marker("network_attempt_expected"):
        pytest.fail(f"test tried to use the network: {attempts}")


SHORT_CHECK_EPOCHS = 5


@pytest.fixture(scope="module", autouse=True)
def short_augmentation_checks(request):
    """The augmentation check's heads train :data:`SHORT_CHECK_EPOCHS` epochs, not the product's
    floor of :data:`~transferkit.training.augment_check.MIN_EPOCHS` (50), in the in-process fits of
    every module not marked ``full_check``: those tests are about what a run caches, traces, saves,
    resumes and reports around the check, not how long its two heads train, and the floor's epochs
    were 13% of the suite's CPU (117 checks, 220 s). The check's verdict is tested at the full floor
    (``tests/test_augment_check.py``), and so are the real-data accuracy claims; CLI children and
    notebook kernels run the product as it ships. Module-scoped, so that the fits a module shares
    (its module fixtures) are made under it too."""
    if request.node.get_closest_marker("full_check"):
        yield
        return
    from transferkit.training import augment_check

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(augment_check, "MIN_EPOCHS", SHORT_CHECK_EPOCHS)
        yield


@pytest.fixture
def short_check(monkeypatch):
    """The short check in a ``full_check`` module: for its tests of what a run caches, spills, traces,
    compiles and records around the check, which do not depend on how long its two heads train."""
    from transferkit.training import augment_check

    monkeypatch.setattr(augment_check, "MIN_EPOCHS", SHORT_CHECK_EPOCHS)


@pytest.fixture
def no_fallback_fonts(monkeypatch):
    """The figures' fonts as matplotlib ships them (DejaVu Sans: no CJK), whatever this machine has
    installed; returns :mod:`transferkit.reporting.figures`."""
    import matplotlib

    from transferkit.reporting import figures

    monkeypatch.setitem(matplotlib.rcParams, "font.family", ["DejaVu Sans"])
    monkeypatch.setattr(figures, "use_fallback_fonts", lambda: ())
    return figures


def pytest_addoption(parser):
    parser.addoption(
        "--cpu-top",
        type=int,
        default=0,
        metavar="N",
        help="list the N tests that used the most CPU time (user + system, of the test's process "
        "and of the child processes it waited for), setup and teardown included",
    )


_CPU_START = pytest.StashKey[float]()


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A fresh list of network attempts for the test (:func:`no_network`), and its CPU time counted
    on the process that runs it, carried to the controller in the reports' ``user_properties``
    (pytest-xdist sends them from its workers)."""
    item.stash[_NETWORK] = _attempts[0] = []
    if not item.config.getoption("cpu_top"):
        yield
        return
    item.stash[_CPU_START] = _cpu_seconds()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    if call.when == "teardown" and _CPU_START in item.stash:
        item.user_properties.append(("cpu_seconds", _cpu_seconds() - item.stash[_CPU_START]))
    yield


_cpu_by_test: dict[str, float] = {}


def pytest_runtest_logreport(report):
    if report.when == "teardown":
        seconds = dict(report.user_properties).get("cpu_seconds")
        if seconds is not None:
            _cpu_by_test[report.nodeid] = seconds


def pytest_terminal_summary(terminalreporter, config):
    top = config.getoption("cpu_top")
    if not top or not _cpu_by_test:
        return
    total = sum(_cpu_by_test.values())
    title = f"CPU time: the {top} costliest of {len(_cpu_by_test)} tests ({total:.0f} s in all)"
    terminalreporter.section(title)
    for nodeid, seconds in sorted(_cpu_by_test.items(), key=lambda kv: -kv[1])[:top]:
        terminalreporter.write_line(f"{seconds:8.1f} s  {100 * seconds / total:4.1f}%  {nodeid}")
