"""glibc malloc tuning at ``import transferkit``: applied on Linux with glibc, never where the user chose."""

import sys

import pytest

from transferkit.runtime import allocator


@pytest.mark.parametrize(
    "environ",
    [
        {"TRANSFERKIT_MALLOC": "system"},
        {"TRANSFERKIT_MALLOC": "System"},
        {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
        {"MALLOC_ARENA_MAX": "4"},
        {"MALLOC_MMAP_THRESHOLD_": "65536"},
    ],
)
def test_the_users_own_malloc_choice_is_left_alone(environ, monkeypatch):
    calls = []
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: calls.append(a))
    assert allocator.tune_malloc(environ) is False
    assert calls == []


def test_nothing_is_set_off_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.tune_malloc({}) is False


def test_each_setting_goes_to_mallopt_on_glibc(monkeypatch):
    if not allocator._glibc():
        pytest.fail("the suite runs on Linux with glibc (CI and the dev VMs); this test checks mallopt there")
    seen = []

    class Libc:
        def __init__(self, *_):
            self.mallopt = Mallopt()

    class Mallopt:
        def __call__(self, parameter, value):
            seen.append((parameter, value))
            return 1

    monkeypatch.setattr(allocator.ctypes, "CDLL", Libc)
    assert allocator.tune_malloc({}) is True
    assert seen == list(allocator.SETTINGS)
    assert dict(seen)[allocator.M_ARENA_MAX] == 1 and dict(seen)[allocator.M_MMAP_MAX] == 0


def test_a_rejected_setting_reports_not_applied(monkeypatch):
    class Libc:
        def __init__(self, *_):
            self.mallopt = lambda parameter, value: 0

    monkeypatch.setattr(allocator.ctypes, "CDLL", Libc)
    monkeypatch.setattr(allocator, "_glibc", lambda: True)
    assert allocator.tune_malloc({}) is False


def test_the_real_mallopt_accepts_the_settings():
    """The process's own glibc takes every setting (it is what import transferkit did already)."""
    assert allocator.tune_malloc({}) is allocator._glibc()
