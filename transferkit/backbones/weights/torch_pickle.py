"""Read PyTorch ``.pth`` state dicts without torch, safely.

A ``.pth`` file is a pickle, and unpickling an untrusted pickle can run any code. This module
reads both torch formats through a restricted unpickler that resolves only the handful of
globals a state dict needs (the tensor-rebuild functions, the storage types and
``collections.OrderedDict``), each mapped to a harmless stand-in defined here. Anything else is
refused with a :class:`TransferkitError` before it is called, so loading a hostile file cannot
execute code.

Formats:

- legacy (torch < 1.6): a stream of pickles: magic number, protocol version, system info, the
  object (tensors refer to storages by persistent id), the list of storage keys, then each
  storage as an int64 element count followed by its raw bytes;
- zip (torch >= 1.6): ``<archive>/data.pkl`` plus one raw file per storage,
  ``<archive>/data/<key>``.
"""

from __future__ import annotations

import collections
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from transferkit.errors import TransferkitError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",  # widened to float32 once read (numpy has no bfloat16)
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


@dataclass(frozen=True)
class _StorageType:
    name: str


class _Storage:
    """A flat typed buffer; filled when the file is read (after unpickling, in legacy files)."""

    def __init__(self, storage_type: _StorageType, numel: int) -> None:
        self.name = storage_type.name
        self.numel = numel
        self.data: np.ndarray | None = None

    def fill(self, raw: bytes, byteorder: str) -> None:
        dtype = np.dtype(_STORAGE_DTYPES[self.name]).newbyteorder(byteorder)
        if len(raw) != self.numel * dtype.itemsize:
            raise ValueError(f"storage holds {len(raw)} bytes, expected {self.numel * dtype.itemsize}")
        data = np.frombuffer(raw, dtype=dtype)
        if self.name == "BFloat16Storage":
            data = (data.astype(np.uint32) << 16).view(np.float32)
        self.data = data


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        """Copy the tensor out of its storage, refusing views that reach outside it."""
        flat = self.storage.data
        dims = (self.offset, *self.size, *self.stride)
        if flat is None or not all(isinstance(v, int) and v >= 0 for v in dims):
            raise ValueError(f"invalid tensor geometry {self.size} / {self.stride} @ {self.offset}")
        if 0 in self.size:
            return np.empty(self.size, dtype=flat.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if last >= flat.size:
            raise ValueError(f"tensor reaches element {last} of a storage of {flat.size}")
        strides = tuple(s * flat.itemsize for s in self.stride)
        view = np.lib.stride_tricks.as_strided(flat[self.offset :], shape=self.size, strides=strides)
        return np.array(view, dtype=flat.dtype.newbyteorder("="))


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor(_v2)``: records where the tensor lives."""
    if not isinstance(storage, _Storage):
        raise ValueError("a tensor must be built from a storage")
    return _TensorRef(storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter``: a parameter is just its tensor."""
    return data


_ALLOWED: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`_ALLOWED` globals; storages come from ``get_storage``."""

    def __init__(self, file: IO[bytes], source: Path, get_storage: Callable[..., _Storage] | None) -> None:
        super().__init__(file)
        self._source = source
        self._get_storage = get_storage

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise TransferkitError(
                f"transferkit refuses to load class {module}.{name} from {self._source}: only tensors are "
                "allowed in a weights file, and unpickling anything else could run code. If you trust "
                "this file, re-save just its tensors with torch: torch.save(model.state_dict(), 'clean.pth')."
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if self._get_storage is None or not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, *view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage reference {pid!r}")
        if view and view[0] is not None:
            raise pickle.UnpicklingError("storage views (pre-0.4 shared storages) are not supported")
        return self._get_storage(str(key), storage_type, numel)


def _read_legacy(handle: IO[bytes], source: Path) -> tuple[object, dict[str, _Storage]]:
    """Read the legacy pickle stream; storages are filled after the object, in key order."""
    storages: dict[str, _Storage] = {}

    def get_storage(key: str, storage_type: _StorageType, numel: int) -> _Storage:
        return storages.setdefault(key, _Storage(storage_type, numel))

    if _RestrictedUnpickler(handle, source, None).load() != _LEGACY_MAGIC:
        raise ValueError("not a PyTorch file (wrong magic number)")
    _RestrictedUnpickler(handle, source, None).load()  # protocol version
    sys_info = _RestrictedUnpickler(handle, source, None).load()
    byteorder = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
    obj = _RestrictedUnpickler(handle, source, get_storage).load()
    for key in _RestrictedUnpickler(handle, source, None).load():
        (numel,) = struct.unpack(f"{byteorder}q", handle.read(8))
        storage = storages[str(key)]
        itemsize = np.dtype(_STORAGE_DTYPES[storage.name]).itemsize
        storage.fill(handle.read(numel * itemsize), byteorder)
    return obj, storages


def _read_zip(path: Path) -> tuple[object, dict[str, _Storage]]:
    """Read the zip format: ``<archive>/data.pkl`` and raw ``<archive>/data/<key>`` storages."""
    storages: dict[str, _Storage] = {}
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        pickles = sorted(name for name in names if name.endswith("data.pkl"))
        if not pickles:
            raise ValueError("zip file without a data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        order = prefix + "byteorder"
        byteorder = ">" if order in names and archive.read(order).strip() == b"big" else "<"

        def get_storage(key: str, storage_type: _StorageType, numel: int) -> _Storage:
            if key not in storages:
                storage = _Storage(storage_type, numel)
                storage.fill(archive.read(f"{prefix}data/{key}"), byteorder)
                storages[key] = storage
            return storages[key]

        with archive.open(pickles[0]) as handle:
            obj = _RestrictedUnpickler(handle, path, get_storage).load()
    return obj, storages


def _tensors_of(obj: object) -> dict[str, np.ndarray]:
    """The tensors of a state dict, or of the state dict inside a training checkpoint."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return _tensors_of(obj[key])
        return {str(k): v.to_numpy() for k, v in obj.items() if isinstance(v, _TensorRef)}
    return {}


def load_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read the tensors of a PyTorch ``.pth`` file (legacy or zip format) as numpy arrays, without torch.

    Only tensors, storages and ordered dicts can be unpickled; a file that asks for any other
    class is refused before anything runs.

    Args:
        path: a file written by ``torch.save(model.state_dict(), path)`` (or a checkpoint dict
            holding one under ``"state_dict"`` / ``"model"``).

    Returns:
        Parameter name -> array, in the file's order and in torch's layout (e.g. conv kernels
        are ``(out, in, kh, kw)``).

    Example:
        >>> tensors = load_torch_state_dict("mobilenet_v2-b0353104.pth")  # doctest: +SKIP
        >>> tensors["features.0.0.weight"].shape  # doctest: +SKIP
        (32, 3, 3, 3)
    """
    path = Path(path)
    if not path.is_file():
        raise TransferkitError(f"PyTorch weights file {path} does not exist. Check the path.")
    try:
        if zipfile.is_zipfile(path):
            obj, _ = _read_zip(path)
        else:
            with open(path, "rb") as handle:
                obj, _ = _read_legacy(handle, path)
        tensors = _tensors_of(obj)
    except TransferkitError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, struct.error) as error:
        raise TransferkitError(
            f"Could not read {path} as a PyTorch .pth file ({type(error).__name__}: {error}). "
            "Expected a file written by torch.save(model.state_dict(), path); it may be truncated or "
            "in another format."
        ) from error
    if not tensors:
        raise TransferkitError(f"{path} holds no tensors: expected a PyTorch state dict (name -> tensor).")
    return tensors
