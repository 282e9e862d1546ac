"""Every seed architecture's training step, scratchnet against its PyTorch twin: time and peak memory.

    python benchmarks/zoo.py                                   # every architecture, two batch sizes, 3 rounds
    python benchmarks/zoo.py --models resnet50,densenet121 --rounds 5
    python benchmarks/zoo.py --quick                           # 1 round, 1 timed step, the first batch size
    python benchmarks/zoo.py --threads 1 --cpu-time            # one thread, CPU time: steadier on a busy machine
    python benchmarks/zoo.py --torch-python /path/to/python    # another PyTorch (default: $SCRATCHNET_TORCH_PYTHON)

One training step = zero_grad, forward (training mode: dropout, batch statistics), the model's loss
on random labels (cross-entropy; GoogLeNet adds 0.3 x its two auxiliary heads' as its paper; Fast
YOLO's sum-squared error against a random target, as both frameworks' mse_loss), backward, SGD with
momentum 0.9.

The PyTorch twin is torchvision's model where torchvision has the same network (VGG-16, ResNet-18/50,
DenseNet-121, EfficientNet-B0); the others are written below from torch.nn, mirroring scratchnet's
definitions layer for layer (LeNet-5, AlexNet with its two-GPU groups and LRN, ZFNet, the paper's
GoogLeNet with LRN, true 5x5 branches and auxiliary heads, SE-ResNet-50, MobileNet v1, the CIFAR
ResNets with option-A shortcuts, Fast YOLO). Equal parameter counts are asserted for every pair.

How it is timed (the rules of benchmarks/timing.py):
* every run is its own process: torch is never imported where scratchnet runs, nor the reverse;
* the children run without this workplace's OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE overrides;
* scratchnet runs twice per round, with ``import scratchnet`` first and with ``import numpy`` first
  (README's own example), since the thread policy must hold whatever the script imported first;
* --rounds alternating rounds (torch first in even rounds, scratchnet first in odd ones); each side
  keeps its fastest step over all rounds. Per child: one warm-up step (allocations, optimizer state,
  kernels loaded), then --steps timed steps.
* memory (timing.measure_step): one more step after the timed ones, with malloc's free memory handed back
  first (scratchnet keeps freed memory for reuse): its peak resident set size minus the resident size
  just before it (activations, workspaces, gradients: "step MB"), and the process's peak ("process MB").

ratio = torch step time / scratchnet step time (>= 1: scratchnet is faster), per import order;
memory ratio = scratchnet / torch. Prints a table, writes benchmarks/results/zoo_cpu.json (--out).
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# benchmarks/timing.py: the shared rules
from timing import OVERRIDES, add_torch_python, at_least, clean_env, measure_step, started, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# name: (batch sizes, the loss). Every seed architecture of DESIGN.md, at its native input size.
ZOO = {
    "lenet5": ((64, 256), "cross_entropy"),
    "alexnet": ((8, 16), "cross_entropy"),
    "zfnet": ((8, 16), "cross_entropy"),
    "vgg16": ((4, 8), "cross_entropy"),
    "googlenet": ((8, 16), "googlenet"),
    "resnet18": ((8, 16), "cross_entropy"),
    "resnet50": ((8, 16), "cross_entropy"),
    "se_resnet50": ((8, 16), "cross_entropy"),
    "densenet121": ((8, 16), "cross_entropy"),
    "mobilenet_v1": ((8, 16), "cross_entropy"),
    "efficientnet_b0": ((8, 16), "cross_entropy"),
    "resnet20": ((32, 128), "cross_entropy"),
    "resnet56": ((32, 128), "cross_entropy"),
    "fast_yolov1": ((4, 8), "mse"),
}
ORDERS = ("scratchnet", "numpy")  # what a scratchnet child imports first


# ---------------------------------------------------------------- the PyTorch twins

def torch_model(name):
    """The PyTorch network of the same architecture and parameter count as scratchnet's ``name``."""
    import torch.nn as nn
    import torchvision.models as tv

    if name in ("vgg16", "resnet18", "resnet50", "densenet121", "efficientnet_b0"):
        return getattr(tv, name)(weights=None)
    builders = {
        "lenet5": lambda: nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)),
        "alexnet": lambda: _torch_alexnet(nn, zf=False),
        "zfnet": lambda: _torch_alexnet(nn, zf=True),
        "googlenet": lambda: _torch_googlenet(nn),
        "se_resnet50": lambda: _torch_se_resnet50(nn, tv),
        "mobilenet_v1": lambda: _torch_mobilenet_v1(nn),
        "resnet20": lambda: torch_cifar_resnet(3),
        "resnet56": lambda: torch_cifar_resnet(9),
        "fast_yolov1": lambda: _torch_fast_yolo(nn),
    }
    return builders[name]()


def _torch_alexnet(nn, zf):
    """scratchnet/models/alexnet.py: AlexNet (227, groups=2 on conv2/4/5, LRN then pool) or ZFNet (224,
    7x7/2, pool (ceil) then LRN, one group)."""
    table = ([(96, 7, 2, 1, 1), (256, 5, 2, 0, 1), (384, 3, 1, 1, 1), (384, 3, 1, 1, 1), (256, 3, 1, 1, 1)] if zf else
             [(96, 11, 4, 0, 1), (256, 5, 1, 2, 2), (384, 3, 1, 1, 1), (384, 3, 1, 1, 2), (256, 3, 1, 1, 2)])
    layers, previous = [], 3
    for index, (maps, kernel, stride, padding, groups) in enumerate(table):
        layers += [nn.Conv2d(previous, maps, kernel, stride, padding, groups=groups), nn.ReLU(inplace=True)]
        lrn, pool = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0), nn.MaxPool2d(3, 2, ceil_mode=zf)
        layers += ([pool, lrn] if zf else [lrn, pool]) if index < 2 else [pool] if index == 4 else []
        previous = maps
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(4096, 1000))


def _torch_googlenet(nn):
    """scratchnet/models/googlenet.py: Table 1 with LRN, no BN, true 5x5 branches, ceil-mode pools, and
    the two auxiliary heads (their outputs returned in training)."""
    import torch

    def conv(c_in, c_out, kernel, stride=1, padding=0):
        return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding), nn.ReLU(inplace=True))

    class Inception(nn.Module):
        def __init__(self, c_in, n1, n3r, n3, n5r, n5, proj):
            super().__init__()
            self.b1 = conv(c_in, n1, 1)
            self.b2 = nn.Sequential(conv(c_in, n3r, 1), conv(n3r, n3, 3, padding=1))
            self.b3 = nn.Sequential(conv(c_in, n5r, 1), conv(n5r, n5, 5, padding=2))
            self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv(c_in, proj, 1))

        def forward(self, x):
            return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)

    def aux(c_in):
        return nn.Sequential(nn.AvgPool2d(5, 3), conv(c_in, 128, 1), nn.Flatten(), nn.Linear(2048, 1024),
                             nn.ReLU(inplace=True), nn.Dropout(0.7), nn.Linear(1024, 1000))

    table = {"3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
             "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
             "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
             "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
             "5b": (832, 384, 192, 384, 48, 128, 128)}

    class GoogLeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(conv(3, 64, 7, 2, 3), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0), conv(64, 64, 1),
                                      conv(64, 192, 3, padding=1), nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0),
                                      nn.MaxPool2d(3, 2, ceil_mode=True))
            self.part3 = nn.Sequential(Inception(*table["3a"]), Inception(*table["3b"]),
                                       nn.MaxPool2d(3, 2, ceil_mode=True), Inception(*table["4a"]))
            self.part4 = nn.Sequential(Inception(*table["4b"]), Inception(*table["4c"]), Inception(*table["4d"]))
            self.part5 = nn.Sequential(Inception(*table["4e"]), nn.MaxPool2d(3, 2, ceil_mode=True),
                                       Inception(*table["5a"]), Inception(*table["5b"]),
                                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4), nn.Linear(1024, 1000))
            self.aux1, self.aux2 = aux(512), aux(528)

        def forward(self, x):
            x = self.part3(self.stem(x))
            aux1 = self.aux1(x)
            x = self.part4(x)
            return self.part5(x), aux1, self.aux2(x)

    return GoogLeNet()


def _torch_se_resnet50(nn, tv):
    """torchvision's ResNet-50 with an SE block (1x1 convs with biases, r = 16) closing every bottleneck's
    residual branch, before the addition (scratchnet/models/senet.py)."""
    from torchvision.models.resnet import Bottleneck, ResNet

    class SEBottleneck(Bottleneck):
        def __init__(self, inplanes, planes, *args, **kwargs):
            super().__init__(inplanes, planes, *args, **kwargs)
            channels = planes * self.expansion
            self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels // 16, 1), nn.ReLU(),
                                    nn.Conv2d(channels // 16, channels, 1), nn.Sigmoid())

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            out = out * self.se(out)
            return self.relu(out + (x if self.downsample is None else self.downsample(x)))

    return ResNet(SEBottleneck, [3, 4, 6, 3])


def _torch_mobilenet_v1(nn):
    """scratchnet/models/mobilenet.py: the stem and 13 depthwise-separable blocks, each conv + BN + ReLU."""
    def conv_bn(c_in, c_out, kernel, stride=1, groups=1):
        return [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    blocks = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512)] + [(1, 512)] * 5 + [(2, 1024), (1, 1024)]
    layers, channels = conv_bn(3, 32, 3, 2), 32
    for stride, out in blocks:
        layers += conv_bn(channels, channels, 3, stride, groups=channels) + conv_bn(channels, out, 1)
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, 1000))


def torch_cifar_resnet(n):
    """scratchnet/models/resnet.py's CifarResNet with its state_dict keys (conv1, bn1, layer1.0.conv1, ..., fc),
    so it loads scratchnet's weights (benchmarks/hvp.py): 6n+2 layers, widths 16-32-64, option-A shortcuts
    (subsample, then zero channels appended)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as TF

    class Unit(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
            self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
            self.stride, self.extra = stride, c_out - c_in

        def forward(self, x):
            out = TF.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            skip = x[:, :, ::self.stride, ::self.stride]
            if self.extra:
                skip = torch.cat([skip, skip.new_zeros((skip.shape[0], self.extra) + skip.shape[2:])], 1)
            return TF.relu(out + skip)

    class CifarResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
            c = 16
            for s, width in enumerate((16, 32, 64)):
                units = [Unit(c if u == 0 else width, width, 2 if s and u == 0 else 1) for u in range(n)]
                setattr(self, f"layer{s + 1}", nn.Sequential(*units))
                c = width
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = TF.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(x.mean((2, 3)))

    return CifarResNet()


def _torch_fast_yolo(nn):
    """scratchnet/models/yolo.py's Fast YOLO: nine 3x3 convs with biases and leaky ReLU 0.1, six 2x2 max
    pools, then FC 256 (linear), FC 4096 (leaky), dropout 0.5, FC 7*7*30."""
    layers, channels = [], 3
    for index, filters in enumerate((16, 32, 64, 128, 256, 512, 1024, 1024, 1024)):
        layers += [nn.Conv2d(channels, filters, 3, 1, 1), nn.LeakyReLU(0.1)] + ([nn.MaxPool2d(2, 2)] if index < 6 else [])
        channels = filters
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(1024 * 7 * 7, 256), nn.Linear(256, 4096), nn.LeakyReLU(0.1),
                         nn.Dropout(0.5), nn.Linear(4096, 7 * 7 * 30))


# ---------------------------------------------------------------- the children

def input_shape(name):
    """(C, H, W) of the architecture's native input (the same for both frameworks)."""
    return {"lenet5": (1, 32, 32), "alexnet": (3, 227, 227), "resnet20": (3, 32, 32), "resnet56": (3, 32, 32),
            "fast_yolov1": (3, 448, 448)}.get(name, (3, 224, 224))


def _data(name, batch):
    """The same random input and target in both frameworks (NumPy arrays)."""
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch,) + input_shape(name), dtype=np.float32)
    if ZOO[name][1] == "mse":
        return x, rng.standard_normal((batch, 7, 7, 30), dtype=np.float32)
    classes = 10 if name in ("lenet5", "resnet20", "resnet56") else 1000
    return x, rng.integers(0, classes, batch)


def child_torch(name, batch, steps, threads):
    import torch
    import torch.nn.functional as TF
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_model(name).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, target = (torch.from_numpy(a) for a in _data(name, batch))
    kind = ZOO[name][1]

    def loss_of(output):
        if kind == "googlenet":
            logits, aux1, aux2 = output
            return TF.cross_entropy(logits, target) + 0.3 * (TF.cross_entropy(aux1, target) +
                                                             TF.cross_entropy(aux2, target))
        if kind == "mse":
            return TF.mse_loss(output.reshape(target.shape), target)
        return TF.cross_entropy(output, target)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_of(model(x)).backward()
        optimizer.step()

    import torchvision
    return dict(framework="torch", version=torch.__version__, torchvision=torchvision.__version__,
                threads=torch.get_num_threads(), params=sum(p.numel() for p in model.parameters()),
                **measure_step(step, steps))


def scratchnet_training(name, threads=None):
    """scratchnet's side of the step this file times (tools/profile_step.py profiles the same): ``threads``
    set (when given), seed 0, model ``name`` in training mode, SGD with momentum 0.9."""
    import scratchnet as sn
    from scratchnet.models import get_model
    from scratchnet.optim import SGD
    if threads:
        sn.set_num_threads(threads)
    sn.manual_seed(0)
    model = get_model(name)
    model.train()
    return model, SGD(model.parameters(), lr=0.01, momentum=0.9)


def child_scratchnet(name, batch, steps, threads, order):
    if order == "numpy":  # a user's script that imports NumPy (and its BLAS) before scratchnet
        import numpy  # noqa: F401
        import scratchnet as sn
    else:
        import scratchnet as sn
        import numpy  # noqa: F401
    import scratchnet.functional as F
    model, optimizer = scratchnet_training(name, threads)
    x, target = (sn.tensor(a) for a in _data(name, batch))

    def loss_of(output):
        if ZOO[name][1] == "mse":
            return F.mse_loss(output, target)
        return model.loss(output, target)  # cross-entropy; GoogLeNet's adds 0.3 x its auxiliary heads'

    def step():
        optimizer.zero_grad()
        loss_of(model(x)).backward()
        optimizer.step()

    return dict(framework="scratchnet", order=order, threads=sn.get_num_threads(), numpy=numpy.__version__,
                params=model.num_parameters(), **measure_step(step, steps))


# ---------------------------------------------------------------- the parent

def run_child(python, args, name, batch, framework, order=None):
    env = clean_env()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    command = [str(python), __file__, "--child", framework, "--models", name, "--batches", str(batch),
               "--steps", str(args.steps), "--threads", str(args.threads or 0)]
    if order:
        command += ["--order", order]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _best(runs, key):
    ok = [r for r in runs if "error" not in r]
    return min(ok, key=lambda r: r[key]) if ok else (runs[-1] if runs else {"error": "not run"})


def bench_pair(args, name, batch):
    """Alternating rounds of the three children; each side's fastest step and largest memory."""
    key = "step_cpu_s" if args.cpu_time else "step_s"
    sides = {"torch": [], "scratchnet": [], "numpy": []}
    for round_ in range(args.rounds):
        ours = [("scratchnet", order) for order in args.orders]
        order = [("torch", None)] + ours if round_ % 2 == 0 else ours + [("torch", None)]
        for framework, import_order in order:
            python = args.torch_python if framework == "torch" else sys.executable
            result = run_child(python, args, name, batch, framework, import_order)
            sides[import_order or "torch"].append(result)
    row = {"model": name, "batch": batch, "clock": key}
    theirs = _best(sides["torch"], key)
    row["torch"] = dict(theirs, rounds=[r.get(key) for r in sides["torch"]])
    for order in args.orders:
        best = _best(sides[order], key)
        row[f"{order}_first"] = dict(best, rounds=[r.get(key) for r in sides[order]])
        if "error" not in best and "error" not in theirs:
            if best["params"] != theirs["params"]:
                raise SystemExit(f"{name}: scratchnet has {best['params']:,} parameters, its PyTorch twin "
                                 f"{theirs['params']:,}: the twin does not mirror the model")
            row[f"ratio_{order}_first"] = theirs[key] / best[key]
            row[f"step_memory_ratio_{order}_first"] = best["step_mb"] / max(theirs["step_mb"], 1e-9)
            row[f"process_memory_ratio_{order}_first"] = best["process_mb"] / theirs["process_mb"]
    return row


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_row(row, orders):
    theirs = row["torch"]
    cells = [f"{row['model']:16s} {row['batch']:5d}", f"{_fmt(theirs.get(row['clock']), '8.3f')}"]
    for order in orders:
        side = row[f"{order}_first"]
        cells.append(f"{_fmt(side.get(row['clock']), '8.3f')} {_fmt(row.get(f'ratio_{order}_first'), '6.2f')}")
    cells.append(f"{_fmt(theirs.get('step_mb'), '7.0f')} {_fmt(row[f'{orders[0]}_first'].get('step_mb'), '7.0f')}")
    errors = [f"{side}: {row[side]['error']}" for side in ["torch"] + [f"{o}_first" for o in orders]
              if "error" in row[side]]
    print("  ".join(cells) + ("  " + "; ".join(errors) if errors else ""), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(ZOO), help=f"comma-separated, from {', '.join(ZOO)}")
    parser.add_argument("--batches", help="comma-separated batch sizes for every model (default: each model's two)")
    parser.add_argument("--rounds", type=at_least(1), default=3,
                        help="alternating rounds (each side keeps its fastest)")
    parser.add_argument("--steps", type=at_least(1), default=3, help="timed steps per child, after one warm-up step")
    parser.add_argument("--threads", type=at_least(0), default=0,
                        help="both sides' thread count (default: each one's own)")
    parser.add_argument("--cpu-time", action="store_true", help="compare process CPU time instead of wall time")
    parser.add_argument("--orders", default=",".join(ORDERS), help="scratchnet's import orders to run")
    parser.add_argument("--quick", action="store_true", help="1 round, 1 timed step, each model's first batch size")
    add_torch_python(parser)
    parser.add_argument("--timeout", type=at_least(1), default=1800, help="seconds per child process")
    parser.add_argument("--out", type=Path, default=RESULTS / "zoo_cpu.json")
    parser.add_argument("--child", choices=["torch", "scratchnet"], help=argparse.SUPPRESS)
    parser.add_argument("--order", choices=ORDERS, default="scratchnet", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(ZOO)}")
    if args.child:
        batch = int(args.batches)
        result = child_torch(names[0], batch, args.steps, args.threads) if args.child == "torch" else \
            child_scratchnet(names[0], batch, args.steps, args.threads, args.order)
        print(json.dumps(result))
        return 0
    if args.quick:
        args.rounds, args.steps = 1, 1
    args.orders = [o for o in args.orders.split(",") if o]
    if not set(args.orders) <= set(ORDERS) or not args.orders:
        parser.error(f"--orders takes {', '.join(ORDERS)}")

    print(f"Training step (forward, loss, backward, SGD momentum 0.9), float32, CPU; {args.rounds} alternating "
          f"round(s), {args.steps} timed step(s) each, fastest kept; "
          f"{'CPU' if args.cpu_time else 'wall'} seconds; threads: "
          f"{args.threads or 'each framework default'}")
    print(f"PyTorch side: {args.torch_python}; every child runs with this workplace's "
          f"{' and '.join(OVERRIDES)} overrides unset")
    header = f"{'model':16s} {'batch':>5s}  {'torch s':>8s}"
    for order in args.orders:
        header += f"  {order[:2] + ' 1st s':>8s} {'ratio':>6s}"
    print(header + f"  {'torch MB':>7s} {'ours MB':>7s}   (sn 1st: import scratchnet first; np 1st: numpy first; "
          f"MB: the step's memory)", flush=True)
    recorded, load_before = started(), os.getloadavg()
    rows = []
    for name in names:
        batches = [int(b) for b in args.batches.split(",")] if args.batches else list(ZOO[name][0])
        for batch in batches[:1] if args.quick else batches:
            row = bench_pair(args, name, batch)
            rows.append(row)
            print_row(row, args.orders)
            meta = dict(rounds=args.rounds, steps=args.steps, threads=args.threads or "default",
                        clock="cpu" if args.cpu_time else "wall", torch_python=str(args.torch_python),
                        torch=row["torch"].get("version", "").split("+")[0], unset=list(OVERRIDES),
                        orders=args.orders)
            write_result(args.out, dict(meta=meta, results=rows), recorded)  # after each row: a partial run counts
    print(f"load average (1, 5, 15 min): before {tuple(round(v, 2) for v in load_before)}, "
          f"after {tuple(round(v, 2) for v in os.getloadavg())}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
