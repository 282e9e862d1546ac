"""Checkpoints: a run's nested state (weights, optimizer, schedule, random generators, progress, config)
in one ``.npz``: the arrays as members, the rest as a JSON tree naming them (no pickle)."""
import json
from collections import Counter
from pathlib import Path

import numpy as np

from .. import backend
from ..nn.serialization import load, save
from .errors import UsageError


def rng_state(device):
    """The random generators a resumed run must continue: the CPU's, and on a GPU run the GPU's
    (its dropout masks)."""
    return {"rng": backend.rng("cpu").bit_generator.state,
            "gpu_rng": backend.get_rng_state("gpu") if device == "gpu" else None}


def restore_rng(state, device):
    backend.rng("cpu").bit_generator.state = state["rng"]
    if device == "gpu" and state.get("gpu_rng") is not None:
        backend.set_rng_state(state["gpu_rng"], "gpu")


def save_checkpoint(path, state):
    arrays = {}
    tree = _pack(state, arrays)
    arrays["__tree__"] = np.frombuffer(json.dumps(tree).encode(), dtype=np.uint8)
    save(arrays, path)  # atomic: temp file + os.replace


def load_checkpoint(path):
    if not Path(path).parent.is_dir():
        raise UsageError(f"--resume: {Path(path).parent} is not a folder (no such run folder)")
    try:
        arrays = load(path)
        tree = json.loads(bytes(arrays.pop("__tree__")).decode())
    except FileNotFoundError:
        raise UsageError(f"--resume: no checkpoint at {path}") from None
    except (ValueError, KeyError, OSError) as exc:
        raise UsageError(f"--resume: {path} is not a readable checkpoint ({exc})") from None
    try:
        state = _unpack(tree, arrays)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise UsageError(f"--resume: {path} is not a readable checkpoint (damaged index: {exc})") from None
    return state


def _pack(value, arrays):
    """JSON-able tree with arrays moved to ``arrays`` (by key), keeping tuples, Counters and int keys exact."""
    on_gpu = backend.cp is not None and isinstance(value, backend.cp.ndarray)
    if isinstance(value, (np.ndarray, np.generic)) or on_gpu:
        key = f"a{len(arrays)}"
        arrays[key] = backend.to_numpy(value)
        return {"__array__": key, "scalar": isinstance(value, np.generic)}
    if isinstance(value, Counter):
        return {"__counter__": [[_pack(k, arrays), n] for k, n in value.items()]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _pack(v, arrays) for k, v in value.items()}
        return {"__items__": [[_pack(k, arrays), _pack(v, arrays)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_pack(v, arrays) for v in value]}
    if isinstance(value, list):
        return [_pack(v, arrays) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"checkpoint: cannot store a {type(value).__name__}")


def _unpack(value, arrays):
    if isinstance(value, list):
        return [_unpack(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "__array__" in value:
        array = arrays[value["__array__"]]
        return array[()] if value["scalar"] else array
    if "__counter__" in value:
        return Counter({_unpack(k, arrays): n for k, n in value["__counter__"]})
    if "__items__" in value:
        return {_unpack(k, arrays): _unpack(v, arrays) for k, v in value["__items__"]}
    if "__tuple__" in value:
        return tuple(_unpack(v, arrays) for v in value["__tuple__"])
    return {k: _unpack(v, arrays) for k, v in value.items()}
