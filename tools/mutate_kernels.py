"""Plant bugs in the CUDA kernels one at a time and count how many the emulator tests catch.

    python tools/mutate_kernels.py                      # every mutant (1400; ~2 h on 2 cores)
    python tools/mutate_kernels.py --only depthwise.cu --only im2col.cu     # their 404; ~35 min
    python tools/mutate_kernels.py --sample 150         # a fixed random sample
    python tools/mutate_kernels.py --only conv.cu --list

Each mutant changes one token on one line of one kernels/*.cu or *.cuh file: a
comparison (< <=, > >=, == !=), && ||, + -, * /, % /, `+=` to `=`, an integer
literal + 1, swapped axis names (SY/SX, PH/PW, DY/DX, KH/KW, OH/OW, H/W, iy/ix,
oy/ox, i/j, tx/ty, threadIdx.x/.y, blockIdx.x/.y), a deleted __syncthreads(),
an accumulator without its `= 0`, `continue` as `break`. The mutated copy of
kernels/ is handed to the emulator (SCRATCHNET_EMU_SOURCE_DIR), one mutant at a time:
  1. compiles(): g++ builds the mutated file's float64 library, which the tests
     load, and checks its float32 build with -fsyntax-only (Emulator.check: the
     same preprocessing and front end, no code generated), the two at once;
  2. the float64 emulator tests of that file's kernels run against it
     (tests/kernels/test_kernels.py) in a forked child. pytest, torch and the
     test file's imports are loaded once, before forking, and gc.freeze()d, so
     pytest's gc.collect() at each child's exit skips them; the child loads no
     installed pytest plugin (these tests use none) and builds no float32 library.
A mutant of depthwise.cu or im2col.cu costs about 1.7 s of CPU (1.2 s compiling,
0.5 s testing), 2-3.5 s of wall time on a machine with other work (load average
2-5 on 2 cores); about one in fifty loops forever and costs --timeout (120 s): 8
of those 404 took half of their 33 minutes.
A mutant is
  caught      the tests fail (or the emulator reports a fault),
  hung        the tests ran past --timeout (counted as caught: a GPU run would hang too),
  error N     the test process crashed (counted as caught),
  invalid     it does not compile, for float32 or float64 (the NVRTC/nvcc tests reject it),
  survived    the tests pass.
A survivor either changes nothing observable (listed in EQUIVALENT with the
reason, read by hand) or is a hole in the tests. The catch rate is
caught / (caught + survived - equivalent). Writes benchmarks/results/mutate_kernels.json.
"""
import argparse
import functools
import gc
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KERNELS = REPO / "kernels"
FILES = ["common.cuh", "conv.cu", "deform.cu", "depthwise.cu", "im2col.cu", "pool.cu"]
TESTS = {  # pytest -k expression for the tests that exercise each file's kernels
    "conv.cu": "test_direct_conv",
    "depthwise.cu": "test_depthwise",
    "im2col.cu": "test_im2col",
    "pool.cu": "max_pool",
    "deform.cu": "deformable",
    "common.cuh": "test_",
}

SWAPS = [("SY", "SX"), ("PH", "PW"), ("DY", "DX"), ("KH", "KW"), ("OH", "OW"), ("H", "W"), ("iy", "ix"),
         ("oy", "ox"), ("i", "j"), ("tx", "ty"), ("threadIdx.x", "threadIdx.y"), ("blockIdx.x", "blockIdx.y")]
OPERATORS = [  # (name, pattern, replacement)
    ("< to <=", r"(?<![<>=!-])<(?![<=])", "<="),
    ("<= to <", r"<=", "<"),
    ("> to >=", r"(?<![<>=!-])>(?![>=])", ">="),
    (">= to >", r">=", ">"),
    ("== to !=", r"==", "!="),
    ("!= to ==", r"!=", "=="),
    ("&& to ||", r"&&", "||"),
    ("|| to &&", r"\|\|", "&&"),
    ("+ to -", r"(?<![+=])\+(?![+=])", "-"),
    ("- to +", r"(?<![-=])-(?![->=])", "+"),
    ("+= to =", r"\+=", "="),
    ("* to /", r"(?<= )\*(?= )", "/"),
    ("/ to *", r"(?<= )/(?= )", "*"),
    ("% to /", r"(?<= )%(?= )", "/"),
    ("literal + 1", r"(?<![\w.])\d+(?![\w.])", None),
    ("no __syncthreads", r"__syncthreads\(\);", ""),
    ("no = 0", r"(scalar_t \w+) = 0;", r"\1;"),
    ("continue to break", r"\bcontinue\b", "break"),
] + [(f"{a} to {b}", r"(?<![\w.])" + re.escape(a) + r"(?![\w])", b) for a, b in SWAPS] + \
    [(f"{b} to {a}", r"(?<![\w.])" + re.escape(b) + r"(?![\w])", a) for a, b in SWAPS]

# Survivors read by hand and found to change nothing a caller can observe: per line (its file and its text as
# --list prints it, after "-"), each equivalent mutant's (operator, occurrence on the line) and why. Keyed by
# the line's text, not its number, so an entry follows its line when the lines above it move
# (tests/kernels/test_mutation_tool.py checks that each still names a mutant the tool plants).
EQUIVALENT = {
    ("pool.cu", "scalar_t best = 0;  // replaced by the first tap inside x (every window has one)"): {
        ("no = 0", 0): "`best` is first read after `where < 0` has made the first in-bounds tap assign it",
    },
    # depthwise_backward_weight's last line: after the reduction's last barrier partial[0] holds the sum,
    # so another thread, or every thread, writing it to gw[tap] writes the same value
    ("depthwise.cu", "if (threadIdx.x == 0) gw[tap] = partial[0];"): {
        ("== to !=", 0): "every thread but 0 writes the final partial[0]: the same value",
        ("literal + 1", 0): "thread 1 instead of thread 0 writes the final partial[0]",
        ("threadIdx.x to threadIdx.y", 0): "threadIdx.y is 0 in a 1-D block: every thread writes partial[0]",
    },
    ("deform.cu", "scalar_t v[4], ly, lx;"): {
        ("literal + 1", 0): "`v[5]` instead of `v[4]`: a fifth neighbour slot that nothing reads",
    },
    ("deform.cu", "scalar_t v[4], scalar_t& ly, scalar_t& lx) {"): {
        ("literal + 1", 0): "neighbours' parameter `v[5]` instead of `v[4]`: an array parameter is a pointer, "
                            "its size is ignored",
    },
}


def equivalent(key, before):
    """Why the mutant `key` ("file:line:operator:occurrence", as --list prints it) of the line `before`
    changes nothing observable (its EQUIVALENT entry), or None."""
    name, _, operator, occurrence = key.split(":")
    return EQUIVALENT.get((name, before), {}).get((operator, int(occurrence)))


def mutable_lines(text):
    """(line number, code part) of each line worth mutating: no comments, includes, guards or
    the parameter-list macros (a swap there renames a parameter: the same function)."""
    in_params = False
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("//")[0]
        stripped = code.strip()
        if in_params:
            in_params = stripped.endswith("\\")
            continue
        if re.match(r"#\s*define\s+\w*PARAMS\b", stripped):
            in_params = stripped.endswith("\\")
            continue
        if not stripped or stripped.startswith(("#include", "#pragma", "#ifndef", "#endif", "#define SCALAR_T",
                                                 "#define CONV_TILE", "#define REDUCE_THREADS", "typedef",
                                                 "template")):
            continue
        yield number, code


def mutants(files):
    for name in files:
        text = (KERNELS / name).read_text()
        lines = text.splitlines(keepends=True)
        for number, code in mutable_lines(text):
            for operator, pattern, replacement in OPERATORS:
                for occurrence, match in enumerate(re.finditer(pattern, code)):
                    new = str(int(match.group()) + 1) if replacement is None else match.expand(replacement)
                    line = lines[number - 1]
                    mutated = line[:match.start()] + new + line[match.end():]
                    key = f"{name}:{number}:{operator}:{occurrence}"
                    yield key, name, "".join(lines[:number - 1] + [mutated] + lines[number:]), line.strip(), \
                        mutated.strip()


def write_sources(folder, name, text):
    """kernels/ with `name` replaced by `text`, always in the same folder: the emulator's build cache is
    keyed by path and content, so the files a mutant leaves alone are never rebuilt."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in KERNELS.iterdir():
        if f.suffix in (".cu", ".cuh", ".h"):
            shutil.copy(f, folder / f.name)
    (folder / name).write_text(text)


def compiles(name, folder, cache):
    """False when g++ rejects the mutated source for either dtype: a mutant no compiler accepts is no
    bug. The float64 libraries, which the tests load, are built into the cache; float32, which they do
    not run, is only checked (Emulator.check: the same g++ front end, no code generated). Two at a time."""
    from concurrent.futures import ThreadPoolExecutor
    from scratchnet.kernels import emulator
    from scratchnet.kernels.launch import sources as kernel_sources
    emu = emulator.Emulator(build_dir=cache / "cuda_emu", source_dir=folder)
    sources = [name] if name.endswith(".cu") else kernel_sources()
    jobs = [(emu.library, source, "float64") for source in sources] + \
        [(emu.check, source, "float32") for source in sources]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda job: job[0](*job[1:]), jobs))
        return True
    except emulator.EmulatorError:
        return False


def run_tests(name, folder, cache, timeout):
    """'caught', 'survived' or 'hung': the float64 emulator tests of this file in a forked child."""
    pid = os.fork()
    if pid == 0:
        os.environ["SCRATCHNET_EMU_SOURCE_DIR"], os.environ["SCRATCHNET_CACHE"] = str(folder), str(cache)
        # the tests use no installed pytest plugin (xdist, hypothesis, benchmark): loading them cost ~1.5 s a run
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1), os.dup2(devnull, 2)
        import numpy as np
        import pytest
        from scratchnet.kernels import emulator
        # the emulator fixture builds every source up front; these tests load float64 only (compiles() checked
        # float32), and a library anyone asks for is still built on demand
        emulator.Emulator.build_all = functools.partialmethod(emulator.Emulator.build_all, dtypes=(np.float64,))
        code = pytest.main(["-q", "-x", "--tb=no", "-p", "no:cacheprovider",
                            str(REPO / "tests" / "kernels" / "test_kernels.py"),
                            "-k", f"emulator and float64 and {TESTS[name]}"])
        os._exit(int(code))
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return "survived" if code == 0 else "caught" if code == 1 else f"error {code}"
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "hung"
        time.sleep(0.05)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=FILES, help="mutate only this file (repeatable)")
    parser.add_argument("--operator", help="only mutants whose operator name contains this (e.g. syncthreads)")
    parser.add_argument("--sample", type=int, help="run a fixed random sample of this many mutants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "mutate_kernels.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    every = [m for m in mutants(args.only or FILES) if args.operator is None or args.operator in m[0].split(":")[2]]
    chosen = sorted(random.Random(args.seed).sample(every, args.sample), key=every.index) \
        if args.sample and args.sample < len(every) else every
    if args.list:
        for key, _, _, before, after in chosen:
            print(f"{key}\n    - {before}\n    + {after}")
        print(f"{len(chosen)} of {len(every)} mutants")
        return 0
    # imported once, before forking: what pytest and the test file import (~0.4 s a run otherwise)
    import pytest  # noqa: F401
    import torch.nn.functional  # noqa: F401
    import scratchnet.functional.conv  # noqa: F401
    import scratchnet.kernels.cpu  # noqa: F401
    import scratchnet.kernels.emulator  # noqa: F401
    gc.freeze()  # pytest's gc.collect() at exit in each child then skips these objects (~1.2 s a run otherwise)
    results, started = [], time.time()
    with tempfile.TemporaryDirectory() as workdir:
        folder, cache = Path(workdir) / "kernels", Path(workdir) / "cache"
        for number, (key, name, text, before, after) in enumerate(chosen, 1):
            write_sources(folder, name, text)
            outcome = run_tests(name, folder, cache, args.timeout) if compiles(name, folder, cache) else "invalid"
            if outcome in ("error 4", "error 5"):  # pytest's usage error / no tests collected: nothing was tested
                raise SystemExit(f"mutate_kernels: the tests did not run for {key} (pytest exit {outcome[6:]}: a "
                                 f"usage error or no test collected); check TESTS and the test file's path")
            if outcome == "survived" and equivalent(key, before):
                outcome = "equivalent"
            results.append(dict(mutant=key, before=before, after=after, outcome=outcome))
            print(f"[{number}/{len(chosen)} {time.time() - started:5.0f}s] {outcome:10s} {key}  |  {after}",
                  flush=True)
    counts = {o: sum(r["outcome"] == o for r in results) for o in sorted({r["outcome"] for r in results})}
    # a child that crashed (a signal, a pytest internal error) failed the tests too
    caught = sum(n for outcome, n in counts.items() if outcome in ("caught", "hung") or outcome.startswith("error"))
    changing = caught + counts.get("survived", 0)
    rate = caught / changing if changing else float("nan")
    summary = dict(command=" ".join(["python", "tools/mutate_kernels.py", *sys.argv[1:]]), mutants=len(every),
                   run=len(chosen), counts=counts, caught=caught, behaviour_changing=changing,
                   catch_rate=rate, seconds=round(time.time() - started), load_average=list(os.getloadavg()),
                   results=results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(f"\n{counts}\ncaught {caught} of {changing} behaviour-changing mutants: {100 * rate:.1f}%  -> {args.out}")
    for r in results:
        if r["outcome"] == "survived":
            print(f"survived: {r['mutant']}\n    - {r['before']}\n    + {r['after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
