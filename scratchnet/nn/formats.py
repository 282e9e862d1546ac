"""Reading weights files: scratchnet's ``.npz``, safetensors, and PyTorch's ``.pt``/``.pth`` without torch.

A file's format is sniffed from its first bytes, not trusted from its name:

    zip archive with ``*/data.pkl``     torch.save's format (PyTorch >= 1.6)
    zip archive of ``.npy`` members     numpy.savez (scratchnet's own)
    pickle protocol 2 (``\\x80\\x02``)  torch.save's legacy format (``_use_new_zipfile_serialization=False``)
    8-byte length, then ``{``           safetensors

PyTorch's files are pickles, and a pickle can call any Python function it names. They are read
here by an allow-list unpickler: ``find_class`` hands out only the few globals torch's format
needs (``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``, ``collections.OrderedDict``
and the ``torch.*Storage`` types), each replaced by a NumPy stand-in defined below, so nothing of
torch's (nor anything else) is imported or run. Any other global (a pickled ``nn.Module``, a
payload calling ``os.system``) is refused before it is called, naming the file and the global.

Tensors come back as NumPy arrays, each its own copy (views are cut out of their storage with
their offset and strides, so two tensors sharing a storage are two arrays). ``float16`` stays
NumPy's ``float16``; ``bfloat16``, which NumPy lacks, becomes ``float32`` (exact: bfloat16 is the
top half of a float32).
"""
import io
import json
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np

ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL_VERSION = 1001

# torch's storage types -> NumPy dtypes (little endian; a "big" byteorder record flips them)
STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "b1", "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16",
}


class WeightsFileError(ValueError):
    """A weights file that cannot be read: truncated, corrupted, foreign, or asking to run code."""


# --------------------------------------------------------------------------- which format


def detect_format(path):
    """"npz", "torch", "torch-legacy" or "safetensors", from the file's first bytes (the name is not trusted)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise WeightsFileError(f"{path} is a damaged zip archive (truncated or corrupted?): re-download or "
                                   f"re-save it [{type(exc).__name__}: {exc}]") from None
        if any(name.endswith("data.pkl") for name in names):
            return "torch"
        if names and all(name.endswith(".npy") for name in names):
            return "npz"
        raise WeightsFileError(f"{path} is a zip archive but neither an .npz of arrays nor a torch.save file "
                               f"(it holds {', '.join(names[:3]) or 'nothing'}): pass a weights file")
    if head.startswith(b"\x80\x02"):
        return "torch-legacy"
    if head.startswith(b"\x93NUMPY"):
        raise WeightsFileError(f"{path} holds a single .npy array, not a weights file: save a state dict "
                               f"with sn.save(model, path)")
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise WeightsFileError(f"{path} is not a weights file scratchnet reads (.npz, .safetensors, or PyTorch's "
                           f".pt/.pth): its first bytes are {head[:8]!r}; pass the right path")


def read_weights(path):
    """What the weights file at ``path`` holds: an ordered dict of arrays for .npz and safetensors;
    for a PyTorch file, the pickled structure (usually a state dict) with every tensor an array."""
    kind = detect_format(path)
    return {"npz": read_npz, "safetensors": read_safetensors, "torch": read_torch_zip,
            "torch-legacy": read_torch_legacy}[kind](path)


def _damaged(path, exc):
    return WeightsFileError(f"{path} is not a valid weights file (truncated or corrupted?): re-download or re-save "
                            f"it [{type(exc).__name__}: {exc}]")


# --------------------------------------------------------------------------- npz and safetensors


def read_npz(path):
    """Every array of an ``.npz``, in order; never unpickles (``allow_pickle=False``)."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an .npz archive")
        with archive:
            # read every array now: a damaged member only shows when it is read (CRC check)
            return OrderedDict((key, archive[key]) for key in archive.files)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _damaged(path, exc) from exc


ORDER_KEY = "scratchnet.order"  # safetensors sorts its header; the state dict's order rides in the metadata


def read_safetensors(path):
    """Every tensor of a safetensors file as a NumPy array (the ``safetensors`` package), in the state dict's
    order when scratchnet wrote the file, else in the header's."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        arrays = load_file(str(path))
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        order = json.loads(header.get("__metadata__", {}).get(ORDER_KEY, "[]"))
        if sorted(order) != sorted(arrays):
            order = [key for key in header if key != "__metadata__"]
    except (SafetensorError, OSError, ValueError, struct.error) as exc:
        raise _damaged(path, exc) from exc
    return OrderedDict((key, arrays[key]) for key in order)


def safetensors_bytes(arrays):
    """A state dict (name -> NumPy array) serialised as safetensors, its key order in the metadata."""
    from safetensors.numpy import save
    return save({key: np.array(value, order="C", copy=None) for key, value in arrays.items()},  # 0-d stays 0-d
                metadata={ORDER_KEY: json.dumps(list(arrays))})


# --------------------------------------------------------------------------- PyTorch: the stand-ins


class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co.: only its NumPy dtype matters."""

    def __init__(self, name, byteorder):
        self.name, self.code = name, STORAGE_DTYPES[name]
        self.raw = np.dtype(byteorder + ("u2" if self.code == "bf16" else self.code))


class _Storage:
    """One storage's flat array, filled once the storage's bytes are read."""

    def __init__(self, storage_type, key, numel, root=None, offset=0):
        self.type, self.key, self.numel = storage_type, key, numel
        self.root, self.offset = root, offset  # a legacy view: ``numel`` elements of ``root`` from ``offset``
        self.array = None


class _PendingTensor:
    """A tensor whose storage may not be read yet (the legacy format stores the bytes after the pickle)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialise(self, path):
        storage, size, stride = self.storage, self.size, self.stride
        flat = storage.array
        if len(size) != len(stride) or self.offset < 0 or any(s < 0 for s in size + stride):
            raise WeightsFileError(f"{path} is corrupted: a tensor of size {size}, stride {stride}, offset "
                                   f"{self.offset} is not a valid view; re-download or re-save it")
        if 0 in size:
            out = np.empty(size, dtype=flat.dtype)
        else:
            last = self.offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= len(flat):
                raise WeightsFileError(f"{path} is corrupted: a tensor reads element {last} of storage "
                                       f"{storage.key!r}, which holds {len(flat)}; re-download or re-save it")
            view = np.lib.stride_tricks.as_strided(flat[self.offset:], size, [s * flat.itemsize for s in stride],
                                                   writeable=False)
            out = np.array(view, order="C")
        if storage.type.code == "bf16":  # bfloat16 = the high 16 bits of a float32
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return out.astype(out.dtype.newbyteorder("="), copy=False)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if metadata and any(metadata.values()):  # conj/neg bits: lazily conjugated or negated complex tensors
        raise pickle.UnpicklingError(f"a tensor carries torch's lazy {sorted(metadata)} flags, which this "
                                     f"reader does not apply")
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    return data  # an nn.Parameter is its tensor here


# the only globals a PyTorch weights file may name, each mapped to its stand-in
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _TorchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ``ALLOWED_GLOBALS`` and torch's storage types; storages are
    collected (by key) for the caller to fill."""

    def __init__(self, file, path, byteorder="<"):
        super().__init__(file, encoding="utf-8")
        self.path, self.byteorder, self.storages, self.views = path, byteorder, {}, {}

    def find_class(self, module, name):
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[module, name]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, self.byteorder)
        hint = (" (a whole pickled model: save its state_dict instead, torch.save(model.state_dict(), path))"
                if module.startswith("torch.nn") else "")
        raise WeightsFileError(f"{self.path} asks to load the Python global {module}.{name}, which a weights file "
                               f"does not need; refused, nothing was executed{hint}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        storage = self.storages.setdefault(key, _Storage(storage_type, key, numel))
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return storage
        # legacy format: a storage that is a slice of another (view_key, offset, size)
        view_key, offset, size = view
        return self.views.setdefault(str(view_key), _Storage(storage_type, str(view_key), int(size), storage,
                                                             int(offset)))


def _resolve(obj, path):
    """``obj`` with every pending tensor replaced by its array (walking dicts, lists and tuples)."""
    if isinstance(obj, _PendingTensor):
        return obj.materialise(path)
    if isinstance(obj, dict):
        return type(obj)((key, _resolve(value, path)) for key, value in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(value, path) for value in obj)
    if isinstance(obj, _Storage):
        raise WeightsFileError(f"{path} holds a bare storage, not tensors; pass a file of tensors")
    return obj


def _fill(storage, data, path):
    """Give ``storage`` its array from ``data`` (its bytes), checking the length."""
    dtype = storage.type.raw
    if len(data) < storage.numel * dtype.itemsize:
        raise WeightsFileError(f"{path} is truncated: storage {storage.key!r} has {len(data)} bytes, "
                               f"{storage.numel * dtype.itemsize} expected; re-download or re-save it")
    storage.array = np.frombuffer(data, dtype=dtype, count=storage.numel)


# --------------------------------------------------------------------------- PyTorch: the two layouts


def read_torch_zip(path):
    """A ``torch.save`` zip file: ``<name>/data.pkl`` (the pickle), ``<name>/data/<key>`` (raw storages),
    ``<name>/byteorder``."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickle_name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            prefix = pickle_name[:-len("data.pkl")]
            names = set(archive.namelist())
            byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
            unpickler = _TorchUnpickler(io.BytesIO(archive.read(pickle_name)), path,
                                        "<" if byteorder == "little" else ">")
            result = unpickler.load()
            for storage in unpickler.storages.values():
                member = f"{prefix}data/{storage.key}"
                if member not in names:
                    raise WeightsFileError(f"{path} is truncated or corrupted: storage {member} is missing; "
                                           f"re-download or re-save it")
                _fill(storage, archive.read(member), path)
        return _resolve(result, path)
    except WeightsFileError:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError, TypeError,
            IndexError, AttributeError, StopIteration, UnicodeDecodeError, MemoryError) as exc:
        raise _damaged(path, exc) from exc


def read_torch_legacy(path):
    """torch.save's legacy stream: pickles of the magic number, protocol version and system info, the
    object (storages as persistent ids), the list of storage keys, then each storage as an int64
    element count followed by its bytes."""
    try:
        with open(path, "rb") as f:
            header = [_TorchUnpickler(f, path).load() for _ in range(3)]
            if header[0] != LEGACY_MAGIC_NUMBER or header[1] != LEGACY_PROTOCOL_VERSION:
                raise WeightsFileError(f"{path} is a pickle but not a PyTorch file (no torch magic number); "
                                       f"pass a weights file")
            byteorder = "<" if header[2].get("little_endian", True) else ">"
            unpickler = _TorchUnpickler(f, path, byteorder)
            result = unpickler.load()
            keys = _TorchUnpickler(f, path).load()
            for key in keys:
                storage = unpickler.storages[str(key)]
                (count,) = struct.unpack(byteorder + "q", f.read(8))
                if count != storage.numel:
                    raise WeightsFileError(f"{path} is corrupted: storage {key!r} records {count} elements, "
                                           f"{storage.numel} expected; re-download or re-save it")
                _fill(storage, f.read(count * storage.type.raw.itemsize), path)
        for view in unpickler.views.values():
            view.array = view.root.array[view.offset:view.offset + view.numel]
        return _resolve(result, path)
    except WeightsFileError:
        raise
    except (pickle.UnpicklingError, OSError, EOFError, KeyError, ValueError, TypeError, IndexError,
            AttributeError, struct.error, UnicodeDecodeError, MemoryError) as exc:
        raise _damaged(path, exc) from exc
