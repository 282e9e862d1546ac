"""Run the exact CUDA sources on the CPU: g++ + cuda_emu.h, driven through ctypes.

    emu = Emulator()                          # builds lazily, once per (source, dtype), cached by content
    device = emu.device(seed=0)               # launcher.KernelAPI on NumPy buffers
    y = device.conv2d_forward(x, w, stride, padding, dilation, groups, out_hw)

``device(seed)`` launches every kernel with the grid and block from
launch.launch_config (what kernels/cuda.py uses on a GPU). ``seed`` != 0
shuffles the order of threads between barriers and of blocks, so a missing
__syncthreads shows up as a changing answer; ``max_blocks`` caps the grid of
the grid-stride kernels so their loops run more than once. What it catches:
  - out-of-bounds reads and writes: arrays are copied into guarded buffers
    (cuda_emu.h), a stray access raises EmulatorError naming thread and offset;
  - reads of shared memory nobody wrote: every ``__shared__`` declaration is
    rewritten (``_declare_shared``) to register its storage, which is filled
    with NaN bytes before every block, templates included;
  - an uninitialised local (an accumulator without ``= 0``): g++ fills every
    local with a 0xFE pattern (-1.7e38 as float, -5e303 as double);
  - outputs a kernel forgot to write: they are allocated full of NaN (int
    outputs full of INT64_MIN), never zeros;
  - a missing barrier, and threads leaving while others wait at one.
What it cannot catch: two threads racing through a plain (non-atomic)
read-modify-write of one global address. Threads switch only at barriers
here, so every `+=` is atomic under emulation; on a GPU it is a lost update.
tools/gpu_check.sh runs the kernel tests under compute-sanitizer racecheck.
A test tool: it is slow (one fiber per thread).
"""
import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .launch import MAX_BLOCKS, RULES, SOURCE_DIR, compile_options, kernels_in, sources
from .launcher import KernelAPI

HEADER = SOURCE_DIR / "cuda_emu.h"
# Every flag g++ gets besides the -I/-D options, and PATTERN_INIT where the
# compiler has it (GCC >= 12, clang >= 8): each local starts as 0xFE bytes, so
# an accumulator that misses its `= 0` starts at -1.7e38 (float) or -5e303
# (double) instead of whatever the stack held.
CXXFLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-w")
PATTERN_INIT = "-ftrivial-auto-var-init=pattern"
# tools/mutate_kernels.py points the emulator at a mutated copy of kernels/
SOURCE_DIR_VARIABLE = "SCRATCHNET_EMU_SOURCE_DIR"
_CTYPES = {"i": ctypes.c_int32, "q": ctypes.c_int64, "f": ctypes.c_float, "d": ctypes.c_double}


class EmulatorError(RuntimeError):
    """A kernel misbehaved under emulation (out-of-bounds access, divergent barrier)."""


def compiler():
    """The C++ compiler the emulator uses, or None."""
    return shutil.which("g++")


@functools.lru_cache(maxsize=None)
def has_pattern_init(cxx):
    """Whether the compiler accepts -ftrivial-auto-var-init=pattern."""
    done = subprocess.run([cxx, PATTERN_INIT, "-x", "c++", "-fsyntax-only", "-"], input=b"", capture_output=True)
    return done.returncode == 0


def default_build_dir():
    """A per-user cache outside the repo: $SCRATCHNET_CACHE or ~/.cache, then scratchnet/cuda_emu."""
    root = os.environ.get("SCRATCHNET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "scratchnet")
    return Path(root) / "cuda_emu"


_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)


def included_files(source, include_dirs):
    """`source` and every file it pulls in through #include "..." (recursively): the build cache key
    hashes them all, so an edited common.cuh rebuilds every kernel that includes it."""
    found, todo = [], [Path(source).resolve()]
    while todo:
        path = todo.pop(0)
        if path in found:
            continue
        found.append(path)
        for name in _INCLUDE.findall(path.read_text()):
            candidates = [folder / name for folder in (path.parent, *include_dirs) if (folder / name).is_file()]
            if not candidates:
                raise EmulatorError(f'{path.name} includes "{name}", which is in none of '
                                    f"{[str(d) for d in (path.parent, *include_dirs)]}")
            todo.append(candidates[0].resolve())
    return found


# `__shared__ T name[A][B];` after preprocessing (one declarator per declaration, as in our kernels)
_SHARED = re.compile(r"\b__shared__\b([^;{}]*);")
_DECLARATOR = re.compile(r"^\s*(?P<type>[\w:<>*\s]+?)\s+(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\]]+\]\s*)*)$")


def declare_shared(code):
    """Rewrite every `__shared__ T name[...];` into static storage that registers itself with the
    emulator (cuda_emu.h: emu::register_shared), which poisons it with NaN bytes before every block.

    A section attribute (the obvious way) is silently ignored by g++ for statics inside function
    templates, exactly where conv.cu keeps its tiles, so the emulator rewrites the declaration instead.
    Kept on one line, so compiler messages still point at the source line.
    """
    def rewrite(match):
        declarator = _DECLARATOR.match(match.group(1))
        if declarator is None or "extern" in match.group(1):
            raise EmulatorError(f"the emulator handles `__shared__ TYPE NAME[...];` (one static array or scalar per "
                                f"declaration), not `__shared__{match.group(1)};`")
        name = declarator["name"]
        return (f"static {declarator['type']} {name}{declarator['dims']}; "
                f"static const bool emu_registered_{name} = ::emu::register_shared(&{name}, sizeof {name});")
    return _SHARED.sub(rewrite, code)


class _PoisonedNumPy:
    """NumPy whose `empty` is full of NaN (floats) or INT64_MIN (integers): an output element the
    kernel never writes shows up in the result instead of passing as a lucky zero."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def empty(shape, dtype=float):
        dtype = np.dtype(dtype)
        return np.full(shape, np.nan if dtype.kind == "f" else np.iinfo(dtype).min, dtype=dtype)


class Emulator:
    def __init__(self, build_dir=None, cxx=None, source_dir=None):
        self.build_dir = Path(build_dir) if build_dir is not None else default_build_dir()
        self.build_dir.mkdir(parents=True, exist_ok=True)
        self.cxx = cxx or compiler()
        self.cxxflags = CXXFLAGS + ((PATTERN_INIT,) if self.cxx and has_pattern_init(self.cxx) else ())
        self.source_dir = Path(source_dir or os.environ.get(SOURCE_DIR_VARIABLE) or SOURCE_DIR)
        self._libraries = {}

    def library(self, source, dtype, kernels=None):
        """The compiled shared library for one .cu file (a path, or a name in the source folder)."""
        source = Path(source) if Path(source).is_absolute() else self.source_dir / source
        if kernels is None:
            kernels = sorted(kernels_in(source.name))
        key = (str(source), np.dtype(dtype).name, tuple(kernels))
        if key not in self._libraries:
            self._libraries[key] = self._build(source, dtype, kernels)
        return self._libraries[key]

    def build_all(self, dtypes=(np.float32, np.float64), workers=2):
        """Compile every kernel source for every dtype, a few at a time (g++ runs outside the GIL)."""
        from concurrent.futures import ThreadPoolExecutor
        jobs = [(source, dtype) for source in sources() for dtype in dtypes]
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda job: self.library(*job), jobs))

    def check(self, source, dtype, kernels=None):
        """Raise EmulatorError where library() would fail to build `source` for `dtype`, without
        generating code (g++ -fsyntax-only after the same preprocessing and rewriting): about half a
        build's time. tools/mutate_kernels.py checks the dtype its tests do not run with this."""
        source = Path(source) if Path(source).is_absolute() else self.source_dir / source
        text, options, include_dirs = self._unit(source, dtype, kernels)
        stem = self.build_dir / f"{source.stem}_{np.dtype(dtype).name}_check"
        self._compile(text, options, include_dirs, stem, None, source)

    def _unit(self, source, dtype, kernels):
        """The translation unit g++ builds for `source` (cuda_emu.h, the source, an export per kernel),
        its -D options and its include folders."""
        if kernels is None:
            kernels = sorted(kernels_in(source.name))
        text = (f'#include "{HEADER}"\n#include "{source}"\n'
                + "".join(f"EMU_EXPORT({k})\n" for k in kernels))
        return text, compile_options(dtype), [source.parent, self.source_dir]

    def _build(self, source, dtype, kernels):
        text, options, include_dirs = self._unit(source, dtype, kernels)
        # the key: every file the build reads (the .cu, the headers it includes, recursively, and
        # cuda_emu.h with its includes), the flags, and this file's rewriting of __shared__
        files = included_files(source, include_dirs) + included_files(HEADER, [])
        digest = hashlib.sha1("\0".join([text, str(options), str(self.cxxflags), self.cxx, _SHARED.pattern,
                                          _DECLARATOR.pattern] + [f.read_text() for f in files]).encode()).hexdigest()
        stem = self.build_dir / f"{source.stem}_{np.dtype(dtype).name}_{digest[:12]}"
        lib = stem.with_suffix(".so")
        if not lib.exists():  # named by content, so a cache dir shared by runs (and xdist workers) is safe
            self._compile(text, options, include_dirs, stem, lib, source)
        library = ctypes.CDLL(str(lib))
        library.emu_alloc.restype = ctypes.c_void_p
        library.emu_alloc.argtypes = [ctypes.c_size_t]
        library.emu_free.argtypes = [ctypes.c_void_p]
        library.emu_message.restype = ctypes.c_char_p
        library.emu_launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_uint] * 6 + [ctypes.c_ulonglong]
        for k in kernels:
            getattr(library, f"emu_signature_{k}").restype = ctypes.c_char_p
        return library

    def _compile(self, text, options, include_dirs, stem, lib, source):
        """Preprocess, rewrite the __shared__ declarations, compile into `lib` (None: check the
        syntax and types only): two g++ runs."""
        cpp, ii, tmp = (stem.with_suffix(f".{os.getpid()}{suffix}") for suffix in (".cpp", ".ii", ".so"))
        cpp.write_text(text)
        try:
            preprocess = [self.cxx, "-std=c++17", "-E", *(f"-I{d}" for d in include_dirs), *options, "-o", str(ii),
                          str(cpp)]
            output = ["-o", str(tmp)] if lib is not None else ["-fsyntax-only"]
            compile_ = [self.cxx, *self.cxxflags, *output, str(ii)]
            for number, cmd in enumerate((preprocess, compile_)):
                if number == 1:
                    ii.write_text(declare_shared(ii.read_text()))
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    raise EmulatorError(f"emulator build of {source.name} failed:\n{' '.join(cmd)}\n{done.stderr}")
            if lib is not None:
                os.replace(tmp, lib)
        finally:
            for path in (cpp, ii, tmp):
                path.unlink(missing_ok=True)

    def launch(self, kernel, launch, args, dtype, seed=0, source=None, kernels=None):
        """Run `kernel` over launch.grid x launch.block; arrays in `args` are updated in place."""
        library = self.library(source or RULES[kernel].source, dtype, kernels)
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

    def device(self, seed=0, max_blocks=MAX_BLOCKS, api=KernelAPI):
        """The kernels' API (launcher.KernelAPI, or ``api``, a subclass with more kernels) running on this
        emulator; outputs start as NaN."""
        def run(kernel, dtype, launch, args):
            self.launch(kernel, launch, args, dtype, seed=seed)
        return api(_PoisonedNumPy(), run, max_blocks=max_blocks)
