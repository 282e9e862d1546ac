"""Run the exact CUDA sources on the CPU: g++ + cuda_emu.h, driven through ctypes.

    emu = Emulator()                          # builds lazily, once per (source, dtype), cached by content
    device = emu.device(seed=0)               # launcher.KernelAPI on NumPy buffers
    y = device.conv2d_forward(x, w, stride, padding, dilation, groups, out_hw)

``device(seed)`` launches every kernel with the grid and block from
launch.launch_config (what kernels/cuda.py uses on a GPU). ``seed`` != 0
shuffles the order of threads between barriers and of blocks, so a missing
__syncthreads shows up as a changing answer. Arrays are copied into guarded
buffers (cuda_emu.h): out-of-bounds accesses raise EmulatorError instead of
silently reading a neighbour. A test tool: it is slow (one fiber per thread).
"""
import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .launch import SOURCE_DIR, SOURCES, compile_options
from .launcher import KernelAPI

HEADER = SOURCE_DIR / "cuda_emu.h"
_CTYPES = {"i": ctypes.c_int32, "q": ctypes.c_int64, "f": ctypes.c_float, "d": ctypes.c_double}


class EmulatorError(RuntimeError):
    """A kernel misbehaved under emulation (out-of-bounds access, divergent barrier)."""


def compiler():
    """The C++ compiler the emulator uses, or None."""
    return shutil.which("g++")


def default_build_dir():
    """A per-user cache outside the repo: $SCRATCHNET_CACHE or ~/.cache, then scratchnet/cuda_emu."""
    root = os.environ.get("SCRATCHNET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "scratchnet")
    return Path(root) / "cuda_emu"


class Emulator:
    def __init__(self, build_dir=None, cxx=None):
        self.build_dir = Path(build_dir) if build_dir is not None else default_build_dir()
        self.build_dir.mkdir(parents=True, exist_ok=True)
        self.cxx = cxx or compiler()
        self._libraries = {}

    def library(self, source, dtype, kernels=None):
        """The compiled shared library for one .cu file (a path, or a name in kernels/)."""
        source = Path(source) if Path(source).is_absolute() else SOURCE_DIR / source
        if kernels is None:
            kernels = sorted(k for k, file in SOURCES.items() if file == source.name)
        key = (str(source), np.dtype(dtype).name, tuple(kernels))
        if key not in self._libraries:
            self._libraries[key] = self._build(source, dtype, kernels)
        return self._libraries[key]

    def build_all(self, dtypes=(np.float32, np.float64), workers=2):
        """Compile every kernel source for every dtype, a few at a time (g++ runs outside the GIL)."""
        from concurrent.futures import ThreadPoolExecutor
        jobs = [(source, dtype) for source in sorted(set(SOURCES.values())) for dtype in dtypes]
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda job: self.library(*job), jobs))

    def _build(self, source, dtype, kernels):
        options = compile_options(dtype)
        text = (f'#include "{HEADER}"\n#include "{source}"\n'
                + "".join(f"EMU_EXPORT({k})\n" for k in kernels))
        digest = hashlib.sha1((text + source.read_text() + HEADER.read_text() + str(options)).encode()).hexdigest()
        stem = self.build_dir / f"{source.stem}_{np.dtype(dtype).name}_{digest[:12]}"
        lib = stem.with_suffix(".so")
        if not lib.exists():  # named by content, so a cache dir shared by runs (and xdist workers) is safe
            cpp, tmp = stem.with_suffix(f".{os.getpid()}.cpp"), stem.with_suffix(f".{os.getpid()}.so")
            cpp.write_text(text)
            cmd = [self.cxx, "-std=c++17", "-O1", "-fPIC", "-shared", "-w", f"-I{source.parent}", f"-I{SOURCE_DIR}",
                   *options, "-o", str(tmp), str(cpp)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            cpp.unlink()
            if done.returncode != 0:
                raise EmulatorError(f"emulator build of {source.name} failed:\n{' '.join(cmd)}\n{done.stderr}")
            os.replace(tmp, lib)
        library = ctypes.CDLL(str(lib))
        library.emu_alloc.restype = ctypes.c_void_p
        library.emu_alloc.argtypes = [ctypes.c_size_t]
        library.emu_free.argtypes = [ctypes.c_void_p]
        library.emu_message.restype = ctypes.c_char_p
        library.emu_launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_uint] * 6 + [ctypes.c_ulonglong]
        for k in kernels:
            getattr(library, f"emu_signature_{k}").restype = ctypes.c_char_p
        return library

    def launch(self, kernel, launch, args, dtype, seed=0, source=None, kernels=None):
        """Run `kernel` over launch.grid x launch.block; arrays in `args` are updated in place."""
        library = self.library(source or SOURCES[kernel], dtype, kernels)
        signature = getattr(library, f"emu_signature_{kernel}")().decode()
        if len(signature) != len(args):
            raise EmulatorError(f"{kernel} takes {len(signature)} arguments ({signature}), got {len(args)}")
        slots, buffers = [], []
        try:
            for position, (code, arg) in enumerate(zip(signature, args)):
                if code == "p":
                    if not isinstance(arg, np.ndarray):
                        raise EmulatorError(f"{kernel} argument {position} must be an array")
                    address = library.emu_alloc(arg.nbytes)
                    buffers.append((address, arg))
                    ctypes.memmove(address, arg.ctypes.data, arg.nbytes)
                    slots.append(ctypes.c_void_p(address))
                elif code in _CTYPES:
                    slots.append(_CTYPES[code](arg.item() if hasattr(arg, "item") else arg))
                else:
                    raise EmulatorError(f"{kernel} argument {position} has a type the emulator cannot pass")
            pointers = (ctypes.c_void_p * len(slots))(*[ctypes.addressof(s) for s in slots])
            call = ctypes.cast(getattr(library, f"emu_call_{kernel}"), ctypes.c_void_p)
            status = library.emu_launch(call, pointers, *launch.grid, *launch.block, seed)
            if status:
                raise EmulatorError(f"{kernel}: {library.emu_message().decode()}")
            for address, array in buffers:
                ctypes.memmove(array.ctypes.data, address, array.nbytes)
        finally:
            for number, (address, _) in enumerate(buffers):
                if library.emu_free(address) == 1:
                    raise EmulatorError(f"{kernel}: write before the start of buffer (argument {number})")
        return args

    def device(self, seed=0):
        """The kernels' API (launcher.KernelAPI) running on this emulator."""
        def run(kernel, dtype, launch, args):
            self.launch(kernel, launch, args, dtype, seed=seed)
        return KernelAPI(np, run)
