"""Loading pickled checkpoints without executing code from the file.

A pickle can name any importable callable and make the loader call it. The unpicklers here
admit only what a checkpoint of arrays needs: numpy arrays and dtypes, plain containers, and,
for PyTorch's zip format, tensors rebuilt from their raw storage bytes (PyTorch itself is not
needed). Anything else is refused with `UnsafePickleError` naming the global.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from maskformer.errors import CheckpointError, UnsafePickleError

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.dtypes", None),  # any numpy.dtypes.<X>DType class
}
_CONTAINERS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    # Protocol-2 pickles of numpy arrays store raw bytes as _codecs.encode(text, "latin1"):
    # a pure function of its arguments.
    ("_codecs", "encode"): codecs.encode,
}


def _numpy_global(module: str, name: str):
    if (module, name) in _NUMPY_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
        target = __import__(module, fromlist=[name])
        return getattr(target, name)
    return None


class SafeUnpickler(pickle.Unpickler):
    """Unpickler admitting only numpy arrays, numpy scalars/dtypes and plain containers."""

    def find_class(self, module: str, name: str):
        found = _numpy_global(module, name)
        if found is not None:
            return found
        if (module, name) in _CONTAINERS:
            return _CONTAINERS[(module, name)]
        raise UnsafePickleError(
            f"refusing to load global '{module}.{name}': only numpy arrays and plain containers "
            "are allowed in a checkpoint")


def load_pickle(path: str | Path) -> Any:
    """Loads a pickle of numpy arrays and containers (e.g. a detectron2 `.pkl` checkpoint)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, encoding="latin1").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a readable pickle ({e})") from None


# --- PyTorch zip checkpoints (torch.save since 1.6) -------------------------------------------

_TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.dtype = _TORCH_STORAGE_DTYPES[name]


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *unused) -> np.ndarray:
    """Rebuilds a (possibly strided) tensor view from its flat storage."""
    if len(size) == 0:
        return storage[offset].copy()
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride))
    return np.array(view)


def _rebuild_parameter(data, requires_grad=None, backward_hooks=None, *unused):
    return data


class _TorchZipUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file, encoding="utf-8")
        self._archive = archive
        self._prefix = prefix
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name.endswith("dtype"):
            raise UnsafePickleError(f"refusing to load global '{module}.{name}'")
        if (module, name) in _CONTAINERS:
            return _CONTAINERS[(module, name)]
        found = _numpy_global(module, name)
        if found is not None:
            return found
        raise UnsafePickleError(
            f"refusing to load global '{module}.{name}': only tensors, numpy arrays and plain "
            "containers are allowed in a checkpoint")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if key not in self._storages:
            if not isinstance(storage_type, _StorageType):
                raise UnsafePickleError(f"unsupported storage type {storage_type!r}")
            raw = self._archive.read(f"{self._prefix}data/{key}")
            if storage_type.dtype == "bfloat16":
                # bfloat16 is the top half of a float32.
                bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
                array = bits.view(np.float32)
            else:
                array = np.frombuffer(raw, dtype=np.dtype(storage_type.dtype).newbyteorder("<"))
            self._storages[key] = array
        return self._storages[key]


def load_torch_zip(path: str | Path) -> Any:
    """Reads a `torch.save` zip checkpoint (`.pth`, `.bin`) into numpy arrays, without torch."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a zip-format PyTorch checkpoint (the legacy pre-1.6 format is not "
            "supported; re-save it with a current torch.save)")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pickles:
            raise CheckpointError(f"{path}: no data.pkl inside the archive")
        prefix = pickles[0][: -len("data.pkl")]
        try:
            return _TorchZipUnpickler(io.BytesIO(archive.read(pickles[0])), archive, prefix).load()
        except UnsafePickleError as e:
            raise UnsafePickleError(f"{path}: {e}") from None


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Loads a flat {name: array} dict from `.pkl`, `.pth`/`.bin` or `.safetensors`.

    detectron2 pickles wrap the weights as {"model": {...}, ...}; PyTorch training checkpoints
    often as {"model": ...} or {"state_dict": ...}; both are unwrapped.
    """
    return load_checkpoint(path)[0]


def load_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """`load_state_dict`, and the string entries beside a wrapped state dict (detectron2's
    converters write `{"model": ..., "__author__": "torchvision", "matching_heuristics": True}`).

    Returns:
        ({name: array}, {key: value as text}) - the second empty for an unwrapped file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            data = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    elif zipfile.is_zipfile(path):
        data = load_torch_zip(path)
    else:
        data = load_pickle(path)
    metadata: dict[str, str] = {}
    if isinstance(data, dict):
        for key in ("model", "state_dict"):
            if key in data and isinstance(data[key], dict):
                metadata = {str(k): str(v) for k, v in data.items()
                            if k != key and isinstance(v, str | bool | int | float)}
                data = data[key]
                break
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict of arrays, got {type(data).__name__}")
    out = {}
    for name, value in data.items():
        if not isinstance(value, np.ndarray | np.generic):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(value).__name__}, not an array")
        out[str(name)] = np.asarray(value)
    return out, metadata
