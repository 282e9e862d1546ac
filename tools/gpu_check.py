"""The Python steps of tools/gpu_check.sh: versions, run comparison, the summary JSON.

    python tools/gpu_check.py versions DEVICE JSON     # print GPU/driver/CUDA/CuPy/Numba/torch versions
    python tools/gpu_check.py resume WORK NAME STEPS JSON TRAIN_ARGS...
                                                       # train, train again stopped after STEPS steps, resume,
                                                       # and compare (bit-identical?), all in this process
    python tools/gpu_check.py summary WORK OUT_JSON    # gather every step into one JSON; exit 1 if any failed

Each command prints what it found and writes a small JSON; gpu_check.sh logs
everything and carries on after a failure, so this file never needs a GPU to
import (the smoke test runs it on the CPU).
"""
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path


def _write(path, obj):
    Path(path).write_text(json.dumps(obj, indent=1, default=str))


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _command_output(*cmd):
    """First lines of a tool's output, or None when the tool is not installed or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"failed: {exc}"
    return (done.stdout + done.stderr).strip()


def versions(device, json_path):
    """Print and save the versions; exit 1 when device is 'gpu' and scratchnet cannot use the GPU."""
    import numba
    import numpy as np

    from scratchnet import backend
    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "numpy": np.__version__, "numba": numba.__version__, "device_asked": device,
            "cupy": getattr(backend.cp, "__version__", None), "gpu_status": backend.gpu_status()}
    if backend.cp is not None and info["gpu_status"] is None:
        cp = backend.cp
        props = cp.cuda.runtime.getDeviceProperties(0)
        info.update(cuda_runtime=cp.cuda.runtime.runtimeGetVersion(), cuda_driver=cp.cuda.runtime.driverGetVersion(),
                    nvrtc=".".join(map(str, cp.cuda.nvrtc.getVersion())), gpu=_text(props["name"]),
                    compute_capability=cp.cuda.Device(0).compute_capability,
                    gpu_memory_gib=round(props["totalGlobalMem"] / 2**30, 1),
                    multiprocessors=props["multiProcessorCount"])
    try:
        import torch
        info.update(torch=torch.__version__, torch_cuda=torch.version.cuda,
                    torch_sees_gpu=torch.cuda.is_available(), cudnn=torch.backends.cudnn.version())
    except ImportError:
        info["torch"] = None
    info["nvidia_smi"] = _command_output("nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                         "--format=csv,noheader")
    info["nvcc"] = (_command_output("nvcc", "--version") or "").splitlines()[-1:] or None
    info["compute_sanitizer"] = shutil.which("compute-sanitizer")
    for key, value in info.items():
        print(f"{key:>20}: {value}")
    _write(json_path, info)
    if device == "gpu" and info["gpu_status"] is not None:
        print(f"error: {info['gpu_status']}")
        return 1
    return 0


def resume(work, name, stop_after, json_path, *train_args):
    """Train (run a); train again, stopped by a real SIGTERM after `stop_after` steps (run b, exit 143);
    resume b; then compare a and b: final weights and every epoch's losses must be bit-identical.
    In one process (train.main, as tests/train/test_train.py does): one interpreter start, one CUDA context."""
    from scratchnet import train
    a, b = Path(work) / f"{name}_a", Path(work) / f"{name}_b"
    device = train_args[train_args.index("--device") + 1] if "--device" in train_args else "cpu"
    codes = [train.main([*train_args, "--out", a]),
             train.main([*train_args, "--out", b, "--debug-signal-after", stop_after]),
             train.main([train_args[0], "--resume", b, "--device", device, "--no-progress"])]
    print(f"exit codes {codes} (expected [0, 143, 0]: done, stopped with a checkpoint, resumed to the end)")
    result = same_run(a, b)
    result["exit_codes"] = codes
    result["ok"] = codes == [0, 143, 0] and result["identical"]
    print(json.dumps(result, indent=1))
    _write(json_path, result)
    return 0 if result["ok"] else 1


def same_run(a, b):
    """Whether runs a and b ended bit-identical: final weights, and every epoch's losses."""
    import numpy as np

    from scratchnet.nn.serialization import load
    result = {"a": str(a), "b": str(b)}
    try:
        wa, wb = load(Path(a) / "final.npz"), load(Path(b) / "final.npz")
        ma = json.loads((Path(a) / "metrics.json").read_text())
        mb = json.loads((Path(b) / "metrics.json").read_text())
    except (OSError, ValueError) as exc:
        result.update(identical=False, error=str(exc))
        return result
    differing = [k for k in wa if k not in wb or not np.array_equal(wa[k], wb[k])]
    losses = [(x["train_loss"], x["test_loss"], y["train_loss"], y["test_loss"]) for x, y in zip(ma, mb)]
    same_losses = len(ma) == len(mb) and all(p == r and q == s for p, q, r, s in losses)
    result.update(identical=not differing and list(wa) == list(wb) and same_losses,
                  differing_weights=differing, same_losses=same_losses,
                  epochs=[{k: m.get(k) for k in ("epoch", "train_loss", "test_loss", "test_acc", "epoch_time_s",
                                                 "images_per_s")} for m in ma])
    return result


def summary(work, out_json):
    """One JSON from the step list (steps.txt: name|exit|seconds|note) and each step's own JSON."""
    work = Path(work)
    steps = []
    for line in (work / "steps.txt").read_text().splitlines():
        name, code, seconds, note = (line.split("|", 3) + [""])[:4]
        steps.append({"step": name, "exit": int(code), "seconds": int(seconds), "note": note,
                      "ok": int(code) == 0 or note.startswith("skipped")})
    report = {"ok": all(s["ok"] for s in steps), "steps": steps}
    for part in sorted(work.glob("*.json")):
        try:
            report[part.stem] = json.loads(part.read_text())
        except ValueError as exc:
            report[part.stem] = {"error": f"unreadable: {exc}"}
    _write(out_json, report)
    width = max(len(s["step"]) for s in steps) if steps else 4
    print(f"\n{'step':<{width}}  result      seconds  note")
    for s in steps:
        verdict = "ok" if s["exit"] == 0 else ("skipped" if s["ok"] else f"FAILED ({s['exit']})")
        print(f"{s['step']:<{width}}  {verdict:<10} {s['seconds']:>8}  {s['note']}")
    print(f"\n{'all steps passed' if report['ok'] else 'SOME STEPS FAILED'}; summary in {out_json}")
    return 0 if report["ok"] else 1


def main(argv):
    commands = {"versions": versions, "resume": resume, "summary": summary}
    if not argv or argv[0] not in commands:
        print(__doc__)
        return 2
    return commands[argv[0]](*argv[1:])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main(sys.argv[1:]))
