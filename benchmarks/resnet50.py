"""ResNet-50 training step, scratchnet against PyTorch: time and peak memory.

    python benchmarks/resnet50.py                 # batch 16, 224x224, float32, 3 timed steps each
    python benchmarks/resnet50.py --batch 4 --steps 2

One training step = forward, cross-entropy on random labels (1000 classes), backward, SGD with
momentum 0.9. Each framework runs in its OWN subprocess (torch is never imported where scratchnet
is timed) with this workplace's OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE overrides removed and the
libraries' default threads. torch's ResNet-50 is built here (torchvision's architecture: bottleneck
[3, 4, 6, 3], stride in the 3x3, 25,557,032 parameters) so torchvision is not needed.

* time: the fastest of --steps steps after one warm-up step (which allocates the optimizer state).
* memory (timing.measure_step): one more step after the timed ones, with malloc's free memory handed
  back first (scratchnet keeps freed memory for reuse): its peak resident set size (Linux VmHWM) minus
  the resident size just before it ("step MB": activations, workspaces, gradients), and the whole
  process's peak ("process MB": plus weights, optimizer state and the libraries).

ratio (time) = torch / scratchnet (>= 1: scratchnet is faster); memory ratio = scratchnet / torch.
Prints a table with the load average, writes benchmarks/results/resnet50_cpu.json.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

# benchmarks/timing.py: the shared rules
from timing import OVERRIDES, at_least, clean_env, measure_step, started, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------- the children

def torch_resnet50():
    import torch.nn as nn

    class Bottleneck(nn.Module):
        def __init__(self, c_in, width, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width)
            self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
            self.conv3, self.bn3 = nn.Conv2d(width, width * 4, 1, bias=False), nn.BatchNorm2d(width * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or c_in != width * 4:
                self.downsample = nn.Sequential(nn.Conv2d(c_in, width * 4, 1, stride, bias=False),
                                                nn.BatchNorm2d(width * 4))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    layers, c_in = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                    nn.MaxPool2d(3, 2, 1)], 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for b in range(blocks):
            layers.append(Bottleneck(c_in, width, stride if b == 0 else 1))
            c_in = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    return nn.Sequential(*layers)


def child_torch(batch, steps):
    import numpy as np
    import torch
    import torch.nn.functional as TF
    torch.manual_seed(0)
    model = torch_resnet50().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((batch, 3, 224, 224), dtype=np.float32))
    target = torch.tensor(rng.integers(0, 1000, batch))

    def step():
        optimizer.zero_grad(set_to_none=True)
        TF.cross_entropy(model(x), target).backward()
        optimizer.step()

    return dict(framework="torch", threads=torch.get_num_threads(),
                params=sum(p.numel() for p in model.parameters()), **measure_step(step, steps))


def child_scratchnet(batch, steps):
    import scratchnet as sn  # first: its thread policy must be in place before NumPy loads its BLAS
    import scratchnet.functional as F  # noqa: I100
    import numpy as np
    from scratchnet.models import get_model
    from scratchnet.optim import SGD
    sn.manual_seed(0)
    model = get_model("resnet50")
    model.train()
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = sn.tensor(rng.standard_normal((batch, 3, 224, 224), dtype=np.float32))
    target = sn.tensor(rng.integers(0, 1000, batch))

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(x), target).backward()
        optimizer.step()

    return dict(framework="scratchnet", params=model.num_parameters(), **measure_step(step, steps))


# ---------------------------------------------------------------- the parent

def run_child(framework, args):
    env = clean_env()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, __file__, "--child", framework, "--batch", str(args.batch), "--steps", str(args.steps)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"the {framework} child failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=at_least(1), default=16)
    parser.add_argument("--steps", type=at_least(1), default=3, help="timed steps after the warm-up (fastest kept)")
    parser.add_argument("--out", type=Path, default=RESULTS / "resnet50_cpu.json")
    parser.add_argument("--child", choices=["torch", "scratchnet"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = child_torch(args.batch, args.steps) if args.child == "torch" else \
            child_scratchnet(args.batch, args.steps)
        print(json.dumps(result))
        return 0

    recorded, load_before = started(), os.getloadavg()
    theirs, ours = run_child("torch", args), run_child("scratchnet", args)
    load_after = os.getloadavg()
    assert ours["params"] == theirs["params"], (ours["params"], theirs["params"])
    summary = dict(time_ratio=theirs["step_s"] / ours["step_s"], step_memory_ratio=ours["step_mb"] / theirs["step_mb"],
                   process_memory_ratio=ours["process_mb"] / theirs["process_mb"])
    print(f"ResNet-50 training step, batch {args.batch}, 224x224, float32, SGD momentum; best of {args.steps}")
    print(f"{'':12} {'step s':>8} {'step MB':>9} {'process MB':>11}")
    for r in (ours, theirs):
        print(f"{r['framework']:12} {r['step_s']:8.2f} {r['step_mb']:9.0f} {r['process_mb']:11.0f}")
    print(f"time ratio (torch/scratchnet) {summary['time_ratio']:.2f}; memory (scratchnet/torch): step "
          f"{summary['step_memory_ratio']:.2f}, process {summary['process_memory_ratio']:.2f}")
    print(f"load average (1, 5, 15 min): before {tuple(round(v, 2) for v in load_before)}, "
          f"after {tuple(round(v, 2) for v in load_after)}; torch threads {theirs['threads']}")
    meta = dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), batch=args.batch,
                steps=args.steps, load_before=load_before, load_after=load_after, unset=list(OVERRIDES))
    write_result(args.out, dict(meta=meta, summary=summary, scratchnet=ours, torch=theirs), recorded)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
