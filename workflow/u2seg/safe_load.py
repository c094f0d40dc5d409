"""Reading pickles we did not write without executing their code: allow-list unpicklers.

Two file kinds need it: detectron2 ``.pkl`` weights (numpy arrays in builtin containers:
:func:`load_numpy_pickle`, anything else is refused) and torch zip checkpoints whose extra entries
``torch.load(weights_only=True)`` refuses, such as the official STEGO checkpoints (PyTorch Lightning +
OmegaConf): :func:`load_torch_zip_tensors` rebuilds tensors only and turns every other object into an
inert :class:`Opaque` placeholder (nothing from the file is ever called). torch is imported when used.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

from u2seg.errors import UserError

#: globals of a numpy-only pickle (detectron2 weights)
NUMPY_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
})
#: globals that rebuild tensors in a torch zip checkpoint's ``data.pkl``
TENSOR_GLOBALS = frozenset({
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_tensor"), ("collections", "OrderedDict"),
    ("torch", "Size"), ("builtins", "set"), ("builtins", "frozenset"),
})
_STORAGE_DTYPES = {"FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
                   "DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32",
                   "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool"}
_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "int8", "bool")


class AllowListUnpickler(pickle.Unpickler):
    """Resolves only the ``allowed`` (module, name) globals; any other goes to :meth:`other_global`."""

    allowed: frozenset[tuple[str, str]] = frozenset()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.allowed:
            return super().find_class(module, name)
        return self.other_global(module, name)

    def other_global(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle")


class NumpyOnlyUnpickler(AllowListUnpickler):
    """numpy arrays, numpy scalars and builtin containers only."""

    allowed = NUMPY_GLOBALS


def load_numpy_pickle(data: bytes) -> Any:
    """The object of a numpy-only pickle (python 2 pickles included: latin1)."""
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


class Opaque:
    """Placeholder for any non-tensor object in a checkpoint: keeps its class name, args and state."""

    qualname = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "Opaque":
        obj = super().__new__(cls)  # pickle's NEWOBJ calls only __new__
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


class TensorsOnlyUnpickler(AllowListUnpickler):
    """A torch zip checkpoint's ``data.pkl``: tensors rebuilt from the zip's storages, dtypes resolved,
    every other global an :class:`Opaque` subclass."""

    allowed = TENSOR_GLOBALS

    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.zf, self.prefix = zf, prefix
        self.storages: dict[str, Any] = {}

    def other_global(self, module: str, name: str) -> Any:
        import torch

        if module == "torch" and name in _STORAGE_DTYPES:
            return getattr(torch, _STORAGE_DTYPES[name])  # a storage type stands for its element dtype
        if module == "torch" and name in _DTYPES:
            return getattr(torch, name)
        return type(name, (Opaque,), {"qualname": f"{module}.{name}"})

    def persistent_load(self, pid: Any) -> Any:
        import torch

        kind, storage_type, key, _location, _numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {kind!r}")
        if key not in self.storages:
            raw = self.zf.read(f"{self.prefix}/data/{key}")
            if not isinstance(storage_type, torch.dtype):
                raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
            dtype = storage_type
            untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
            self.storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        return self.storages[key]


def load_torch_zip_tensors(path: Path) -> Any:
    """The object of a torch zip checkpoint with tensors rebuilt and everything else :class:`Opaque`."""
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise UserError(f"{path}: not a torch zip checkpoint (no data.pkl)")
        prefix = pkl[0].rsplit("/", 1)[0] if "/" in pkl[0] else ""
        return TensorsOnlyUnpickler(zf.read(pkl[0]), zf, prefix).load()
