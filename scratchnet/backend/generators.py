"""One seeded random generator per device, so ``manual_seed`` makes runs repeatable, and their states
(a checkpoint stores them)."""
import numpy as np

from . import gpu
from .arrays import check_device

_generators = {}


def manual_seed(seed):
    """Seed scratchnet's random generators (init, dropout, data shuffling) on every device."""
    _generators["cpu"] = np.random.default_rng(seed)
    if gpu.cp is not None:
        _generators["gpu"] = (seed,)  # created lazily, only if a GPU is used
    return seed


def rng(device="cpu"):
    """The random generator for a device (NumPy Generator or CuPy Generator)."""
    device = check_device(device)
    if device == "cpu":
        if "cpu" not in _generators:
            _generators["cpu"] = np.random.default_rng()
        return _generators["cpu"]
    state = _generators.get("gpu")
    if not hasattr(state, "random"):
        seed = state[0] if isinstance(state, tuple) else None
        _generators["gpu"] = gpu.cp.random.default_rng(seed)
    return _generators["gpu"]


def get_rng_state(device="cpu"):
    """A device's generator state as host data (a checkpoint stores it; set_rng_state restores it).

    CPU: NumPy's ``bit_generator.state``. GPU: the pending seed while nothing was drawn yet, else a
    host copy of CuPy's cuRAND states (its Generator has no public state API; ``_state`` holds them).
    """
    if check_device(device) == "cpu":
        return rng("cpu").bit_generator.state
    generator = _generators.get("gpu")
    if not hasattr(generator, "random"):
        return {"seed": generator[0] if isinstance(generator, tuple) else None}
    return {"curand_states": gpu.cp.asnumpy(generator.bit_generator._state)}


def set_rng_state(state, device="cpu"):
    """Put back a state from get_rng_state, so the next draws repeat those that followed it."""
    if check_device(device) == "cpu":
        rng("cpu").bit_generator.state = state
    elif "seed" in state:
        _generators["gpu"] = (state["seed"],)
    else:
        generator = gpu.cp.random.default_rng(0)
        saved, current = state["curand_states"], generator.bit_generator._state
        if saved.shape != current.shape:
            raise ValueError(f"the saved GPU random state holds {saved.size} bytes but this CuPy's generator "
                             f"{current.size}: resume with the CuPy version that wrote it")
        current[...] = gpu.cp.asarray(saved)
        _generators["gpu"] = generator
