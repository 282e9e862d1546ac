"""The numbers in README.md and docs/ come from benchmarks/results/*.json, written in by this script.

A page holds a generated block where it quotes measured numbers:

    <!-- results: NAME -->
    ...the table BLOCKS[NAME] renders from the JSON...
    <!-- /results -->

`python tools/publish_results.py` rewrites every block from the JSON as it is now (run it after a
benchmark); `--check` only lists the blocks that differ, and tests/test_docs.py fails on any. Each
row says the command that produced it, when and at what load average (`recorded`, written by
benchmarks/timing.py's write_result); history lives in git, not in the pages. A block whose markers are
indented (inside a list item) has its lines indented as they are.
"""
import argparse
import ast
import json
import math
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^(?P<indent> *)(<!-- results: (?P<name>[\w-]+) -->\n)(?P<body>.*?)^(?P=indent)(<!-- /results -->)",
                   re.S | re.M)


def result(name):
    """benchmarks/results/NAME.json, or None where it has not been run."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def when(data):
    """'2026-12-06, load 1.2-1.5': the date and the load average (1 minute) before and after."""
    recorded = data["recorded"]
    loads = [recorded["load_before"][0], recorded["load_after"][0]]
    low, high = f"{min(loads):.1f}", f"{max(loads):.1f}"
    return f"{recorded['date'][:10]}, load {low if low == high else low + '-' + high}"


def command(data):
    return f"`{data['recorded']['command']}`"


def geomean(values):
    values = list(values)
    return math.exp(sum(map(math.log, values)) / len(values))


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def row(what, number, how, details):
    """One headline row: what was measured, the number, the command that measured it, the page with the details."""
    return f"| {what} | {number} | {how} | {details} |"


def missing(what, how):
    return row(what, "not measured", f"`{how}`", "-")


# --------------------------------------------------------------------------- rows of the headline table

TRAINING = "[training](docs/training.md#lenet-5-on-fashion-mnist-measured)"
ROUTES = "[kernels](docs/kernels.md#benchmark-every-route-against-torch)"


def lenet_accuracy():
    data = result("train_lenet")
    if data is None:
        return missing("LeNet-5, Fashion-MNIST, 10 epochs", "python benchmarks/train_lenet.py --epochs 10 --no-torch")
    epochs = [e["epoch_time_s"] for run in data["runs"]["scratchnet"] for e in run["epochs"]]
    return row(f"LeNet-5, Fashion-MNIST, {data['epochs']} epochs ({when(data)})",
               f"**{100 * data['final_test_acc']:.2f}% test accuracy** (best epoch "
               f"{100 * data['best_test_acc']:.2f}%), {min(epochs):.1f}-{max(epochs):.1f} s per epoch", command(data),
               TRAINING)


def lenet_epoch():
    data = result("train_lenet_epoch")
    if data is None:
        return missing("LeNet-5 epoch vs PyTorch", "python benchmarks/train_lenet.py --rounds 5")
    return row(f"LeNet-5 training epoch vs PyTorch{' ' + data['torch'] if 'torch' in data else ''} ({when(data)})",
               f"**{data['ratio']:.2f}** of PyTorch's speed ({data['scratchnet_epoch_s']:.2f} s vs "
               f"{data['pytorch_epoch_s']:.2f} s, best of {len(data['runs']['scratchnet'])} alternating rounds each)",
               command(data), TRAINING)


def conv_headline():
    data = result("conv_cpu")
    if data is None:
        return missing("conv layers vs PyTorch", "python benchmarks/conv.py")
    summary = data["summary"]
    low = min((r for r in data["rows"] if r["route"] == "auto"), key=lambda r: r["forward_backward_ratio"])
    return row(f"conv layers, `auto` route vs PyTorch, {summary['layers']} layers ({when(data)})",
               f"forward+backward geometric mean **{summary['geomean_forward_backward_ratio']:.2f}** of PyTorch's "
               f"speed, lowest {low['forward_backward_ratio']:.2f} ({low['layer']})", command(data), ROUTES)


def resnet50_headline():
    data = result("resnet50_cpu")
    if data is None:
        return missing("ResNet-50 training step", "python benchmarks/resnet50.py --steps 5")
    summary, ours, theirs = data["summary"], data["scratchnet"], data["torch"]
    return row(f"ResNet-50 training step, batch {data['meta']['batch']}, 224x224 ({when(data)})",
               f"**{summary['time_ratio']:.2f}** of PyTorch's speed ({ours['step_s']:.2f} s vs "
               f"{theirs['step_s']:.2f} s), {summary['step_memory_ratio']:.2f}x its step memory", command(data), ROUTES)


def zoo_ratios(row):
    """A zoo row's ratios, one per import order measured."""
    return [row[key] for key in ("ratio_scratchnet_first", "ratio_numpy_first") if key in row]


def zoo_headline():
    data = result("zoo_cpu")
    if data is None:
        return missing("training step of every seed architecture vs PyTorch", "python benchmarks/zoo.py")
    rows = [r for r in data["results"] if zoo_ratios(r)]
    low = min(rows, key=lambda r: min(zoo_ratios(r)))
    return row(f"training step of {len({r['model'] for r in rows})} seed architectures vs PyTorch ({when(data)})",
               f"geometric mean **{geomean(ratio for r in rows for ratio in zoo_ratios(r)):.2f}** of PyTorch's speed "
               f"over models, batch sizes and import orders, lowest {min(zoo_ratios(low)):.2f} ({low['model']}, batch "
               f"{low['batch']})", command(data), "[kernels](docs/kernels.md#the-zoo-against-pytorch)")


def gpu_headline():
    data = result("gpu_check")
    link = "[kernels](docs/kernels.md#running-it-on-a-gpu-toolsgpu_checksh)"
    how = "`bash tools/gpu_check.sh DATA_DIR OUT_DIR`"
    if data is None:
        return row("the GPU route on real hardware",
                   "**never run on a GPU**; one command does the whole check on any CUDA machine", how, link)
    passed = sum(step["ok"] for step in data["steps"])
    device = data.get("versions", {}).get("device", "a GPU")
    return row(f"the GPU route on {device}",
               f"{passed} of {len(data['steps'])} steps passed{'' if data['ok'] else ' (**some failed**)'}", how, link)


# the mutation runs of record: the sampled or complete runs, then the targeted ones (every deleted barrier and
# accumulator)
MUTATION_SAMPLES = ("mutate_kernels", "mutate_depthwise_im2col", "mutate_deform")
MUTATION_RUNS = MUTATION_SAMPLES + ("mutate_kernels_targeted",)


def mutated_files(data):
    """The .cu/.cuh files a mutation run planted bugs in, read from its mutants."""
    return sorted({r["mutant"].split(":")[0] for r in data["results"]})


def mutation_headline():
    rows = []
    for name in MUTATION_SAMPLES:
        data = result(name)
        if data is not None:
            run = f"all {data['mutants']}" if data["run"] == data["mutants"] else \
                f"{data['run']} sampled of {data['mutants']}"
            rows.append(f"{data['caught']} of {data['behaviour_changing']} behaviour-changing mutants of "
                        f"{', '.join(mutated_files(data))} ({run}; `{data['command']}`)")
    return row("CUDA kernels: planted bugs caught by the CPU emulator's tests", "; ".join(rows),
               "`python tools/mutate_kernels.py --sample N`",
               "[kernels](docs/kernels.md#trusting-the-cuda-code-without-a-gpu)")


def macs_headline():
    data = result("models_macs")
    published = [r for r in data["results"] if r["torchvision_gmacs"] is not None]
    equal = [r for r in published if round(r["macs"] / 1e9, 3) == round(r["torchvision_gmacs"], 3)]
    return row("multiply-adds of the zoo",
               f"equal torchvision's published GMACs (to its 3 decimals) for {len(equal)} of the {len(published)} "
               "models it publishes", "`python benchmarks/models.py --macs`",
               "[summary](docs/summary.md#macs-of-the-zoo-vs-torchvision)")


def parity_headline():
    data = result("torchvision_parity")
    diffs = [r["max_abs_diff"] for r in data["rows"]]
    return row("torchvision's pretrained architectures, logits in float64",
               f"max abs difference {min(diffs):.2e} to {max(diffs):.2e} over {len(diffs)} models",
               "`python benchmarks/torchvision_parity.py`", "[models](docs/models.md)")


def distributed_headline():
    data = result("distributed")
    if data is None:
        return missing("data parallel, 2 ranks", "python benchmarks/distributed.py")
    two = [r for r in data["data_parallel"] if r["ranks"] == 2 and r.get("overlap", True)]
    efficiency = ", ".join(f"{r['scaling_efficiency']:.2f} ({r['model']})" for r in two)
    return row(f"data parallel, 2 ranks on {data['recorded']['cpus']} cores ({when(data)})",
               f"scaling efficiency {efficiency}", command(data), "[distributed](docs/distributed.md)")


def claims_headline():
    verdicts, claims = {}, 0
    for path in sorted((RESULTS / "claims").glob("*.json")):
        claims += 1
        for outcome in json.loads(path.read_text())["results"].values():
            verdict = outcome["verdict"].split(";")[0]  # "holds; 2 of the paper's numbers differ": holds
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
    skipped = verdicts.pop("skipped", 0)
    counts = ", ".join(f"{verdict} {n}" for verdict, n in sorted(verdicts.items(), key=lambda item: -item[1]))
    return row(f"the study notes' {claims} claims, measured (training claims over 3 seeds at `--quick`, Fashion-MNIST)",
               f"{counts}{f'; {skipped} runs on datasets not on this machine skipped' if skipped else ''}",
               "`python -m scratchnet.study claims --quick`", "[claims](docs/claims.md)")


def headline(_=None):
    rows = [lenet_accuracy(), lenet_epoch(), conv_headline(), resnet50_headline(), zoo_headline(), gpu_headline(),
            mutation_headline(), macs_headline(), parity_headline(), distributed_headline(), claims_headline()]
    return "| what | number | command | details |\n| --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"


# --------------------------------------------------------------------------- the pages' tables


def ms(value):
    """A time in ms with three significant figures or more: 92.8, 7.03, 0.218."""
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def conv_layers():
    data = result("conv_cpu")
    rows = [(r["layer"], r["picked"], ms(r["forward_ms"]), ms(r["torch_forward_ms"]), f"{r['forward_ratio']:.2f}",
             ms(r["forward_backward_ms"]), ms(r["torch_forward_backward_ms"]),
             f"**{r['forward_backward_ratio']:.2f}**") for r in data["rows"] if r["route"] == "auto"]
    return (f"{command(data)}, {when(data)}, ratio = PyTorch's time / scratchnet's:\n\n"
            + table(["layer", "route picked", "fwd ms", "torch fwd ms", "fwd ratio", "fwd+bwd ms", "torch fwd+bwd ms",
                     "fwd+bwd ratio"], rows))


# auto's rules on the CPU in float32 (AUTO in scratchnet/functional/conv_routes.py), in its order, each with the
# route of benchmarks/conv.py its route is measured against: the im2col route, or for im2col's own rule (chunks
# whose columns fit the cache) the same route with the whole batch in one column buffer
AUTO_RULES = [("depthwise", "im2col"), ("gemm1x1", "im2col"), ("window", "im2col"), ("winograd", "im2col"),
              ("im2col", "im2col-unchunked")]
CONV_BENCHMARK = REPO / "benchmarks" / "conv.py"


def conv_benchmark_layers():
    """benchmarks/conv.py's LAYERS (name, batch, in-channels, size, out-channels, kernel, stride, padding, groups),
    read from its source: importing it needs benchmarks/ on the path, and running it times them."""
    tree = ast.parse(CONV_BENCHMARK.read_text(encoding="utf-8"))
    layers = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                  and any(getattr(target, "id", None) == "LAYERS" for target in node.targets))
    return ast.literal_eval(layers)


def auto_reason(label, layer, ours, against, base):
    """One row under auto's rules: the route's forward+backward on a layer it takes (``ours``: the layer's 'auto'
    row, the numbers of conv-layers too) against route ``against``'s (``base``: its row, None where the run did
    not time it) and torch's, and the two routes' peak memory."""
    base_ms, speedup, base_mb = ("not timed", "-", "-") if base is None else (
        ms(base["forward_backward_ms"]), f"**{base['forward_backward_ms'] / ours['forward_backward_ms']:.2f}**",
        f"{base['peak_mb']:.1f}")
    return (label, layer, ms(ours["forward_backward_ms"]), against, base_ms, speedup,
            ms(ours["torch_forward_backward_ms"]), f"{ours['forward_backward_ratio']:.2f}", f"{ours['peak_mb']:.1f}",
            base_mb)


def auto_reasons():
    data = result("conv_cpu")
    if data is None:
        return "Not measured: `python benchmarks/conv.py`.\n"
    rows = {(r["layer"], r["route"]): r for r in data["rows"]}
    picked = {r["layer"]: r["picked"] for r in data["rows"] if r["route"] == "auto"}  # in the run's order
    lines = []
    for route, against in AUTO_RULES:
        layers = [layer for layer, pick in picked.items() if pick == route]
        lines += [auto_reason(f"`{route}`" if i == 0 else "", layer, rows[(layer, "auto")], against,
                              rows.get((layer, against))) for i, layer in enumerate(layers)]
        if not layers:
            lines.append((f"`{route}`", "no layer of this run", *"-" * 8))
    unmeasured = [layer[0] for layer in conv_benchmark_layers() if layer[0] not in picked]
    threads = sorted({r["threads"] for r in data["rows"]})
    return (f"{command(data)}, {when(data)}: forward+backward (both gradients), float32, scratchnet on "
            f"{', '.join(map(str, threads))} threads, torch {data['meta']['torch_version']} on "
            f"{data['meta']['torch_threads']} threads; x = the other's time / the route's (> 1: the route is faster); "
            f"peak MB: tracemalloc's peak during one forward+backward:\n\n"
            + table(["rule's route", "layer", "fwd+bwd ms", "against", "its fwd+bwd ms", "x", "torch fwd+bwd ms",
                     "x torch", "peak MB", "its peak MB"], lines)
            + (f"\nNot measured in this run: {', '.join(unmeasured)} (`python benchmarks/conv.py`).\n"
               if unmeasured else ""))


def depthwise_layers():
    data = result("depthwise_cpu")
    if data is None or "recorded" not in data:  # a result without its command, date and load is not quoted
        return "Not measured: `python benchmarks/depthwise.py --repeat 15`.\n"
    rows = [(r["layer"], ms(r["forward_ms"]), ms(r["backward_input_ms"]), ms(r["backward_weight_ms"]),
             ms(r["forward_backward_ms"]), ms(r["torch_forward_ms"]), ms(r["torch_forward_backward_ms"]),
             f"{r['forward_ratio']:.2f}", f"**{r['forward_backward_ratio']:.2f}**") for r in data["rows"]]
    threads = f"{data['threads']} threads each" if data["threads"] else "each library's default threads"
    low = min(data["rows"], key=lambda r: r["forward_backward_ratio"])
    rounds = f" in each of {data['rounds']} alternating rounds" if data.get("rounds", 1) > 1 else ""
    versus = f", against torch {data['torch']}" if "torch" in data else ""
    return (f"{command(data)}, {when(data)}: float32, the fastest of {data['repeat']} calls{rounds}, {data['clock']}, "
            f"{threads}{versus}; ratio = torch's time / scratchnet's:\n\n"
            + table(["layer", "fwd ms", "input grad ms", "weight grad ms", "f+b ms", "torch fwd ms", "torch f+b ms",
                     "fwd ratio", "f+b ratio"], rows)
            + f"\nforward+backward ratio: geometric mean **{data['geomean_forward_backward_ratio']:.2f}**, lowest "
              f"{low['forward_backward_ratio']:.2f} ({low['layer']}).\n")


def resnet50_step():
    data = result("resnet50_cpu")
    ours, theirs = data["scratchnet"], data["torch"]
    rows = [("scratchnet", f"{ours['step_s']:.2f}", f"{ours['step_mb']:.0f}", f"{ours['process_mb']:.0f}"),
            (f"PyTorch ({theirs['threads']} threads)", f"{theirs['step_s']:.2f}", f"{theirs['step_mb']:.0f}",
             f"{theirs['process_mb']:.0f}")]
    return (f"{command(data)}, batch {data['meta']['batch']}, {when(data)}: time ratio "
            f"**{data['summary']['time_ratio']:.2f}**, step memory {data['summary']['step_memory_ratio']:.2f}x:\n\n"
            + table(["framework", "step s (fastest)", "step MB", "process peak MB"], rows))


def zoo_steps():
    data = result("zoo_cpu")
    if data is None:
        return "Not measured: `python benchmarks/zoo.py`.\n"

    def seconds(side, clock):
        return f"{side[clock]:.3f}" if clock in side else side.get("error", "-")

    rows = [(row["model"], row["batch"], seconds(row["torch"], row["clock"]),
             seconds(row["scratchnet_first"], row["clock"]), f"**{row['ratio_scratchnet_first']:.2f}**"
             if "ratio_scratchnet_first" in row else "-",
             seconds(row.get("numpy_first", {}), row["clock"]),
             f"{row['ratio_numpy_first']:.2f}" if "ratio_numpy_first" in row else "-",
             f"{row['step_memory_ratio_scratchnet_first']:.2f}" if "step_memory_ratio_scratchnet_first" in row else "-")
            for row in data["results"]]
    return (f"{command(data)}, {when(data)}, PyTorch {data['meta'].get('torch', '')}; ratio = PyTorch's step time / "
            f"scratchnet's, each side's fastest step over alternating rounds:\n\n"
            + table(["model", "batch", "PyTorch s", "scratchnet s (imported first)", "ratio", "scratchnet s (numpy "
                     "imported first)", "ratio", "step memory, scratchnet / PyTorch"], rows))


def lenet_runs():
    rows = []
    for name, what in (("train_lenet", "accuracy run"), ("train_lenet_epoch", "epoch vs PyTorch, default threads"),
                       ("train_lenet_threads1_epoch", "epoch vs PyTorch, one thread")):
        data = result(name)
        if data is None:
            continue
        torch_s = f"{data['pytorch_epoch_s']:.2f}" if "pytorch_epoch_s" in data else "-"
        ratio = f"**{data['ratio']:.2f}**" if "ratio" in data else "-"
        rows.append((what, command(data), when(data), data["epochs"], f"{100 * data['final_test_acc']:.2f}%",
                     f"{data['scratchnet_epoch_s']:.2f}", torch_s, ratio))
    return table(["run", "command", "when", "epochs", "test accuracy", "scratchnet epoch s (fastest)",
                  "PyTorch epoch s", "ratio"], rows)


def distributed_runs():
    data = result("distributed")
    def gradients(r):  # how the 2-rank runs average: buckets reduced during backward, or after it (older runs)
        return "-" if r["ranks"] == 1 else "during backward" if r.get("overlap", False) else "after backward"
    steps = [(r["model"], r["ranks"], gradients(r), r["batch_per_rank"], f"{1000 * r['step_s']:.1f}",
              f"{r['images_per_s']:.0f}", f"{r['scaling_efficiency']:.2f}") for r in data["data_parallel"]]
    allreduce = [(f"{r['bytes'] // 1024} KiB", f"{r['communicator_GBps']:.3f}", f"{r['mpi4py_GBps']:.3f}",
                  f"{r['communicator_GBps'] / r['mpi4py_GBps']:.2f}") for r in data["allreduce"]]
    alexnet = [(what, f"{r['step_s']:.2f}", f"{r['parameter_MB_per_rank']:.0f}", f"{r['peak_rss_MB_per_rank']:.0f}")
               for what, r in zip(["one process, `alexnet(groups=2)`", "two towers on 2 ranks (`AlexNetTowers`)"],
                                  data["alexnet"])]
    rounds = data.get("rounds", 1)
    fastest = f", each configuration's fastest of {rounds} alternating rounds" if rounds > 1 else ""
    return (f"{command(data)}, {when(data)}, one thread per rank{fastest}:\n\n"
            + table(["model", "ranks", "gradient allreduce", "batch per rank", "step ms", "images/s",
                     "scaling efficiency"], steps) + "\n"
            + table(["allreduce, 2 ranks, float32", "Communicator.allreduce GB/s", "raw mpi4py Allreduce GB/s",
                     "ratio"], allreduce) + "\n"
            + table(["AlexNet, batch 8, 227x227", "s/step", "parameter MB per rank", "peak RSS MB per rank"], alexnet))


def lenet_epochs():
    data = result("train_lenet")
    best = min(data["runs"]["scratchnet"], key=lambda run: run["best_epoch_s"])
    rows = [(e["epoch"], f"{e['train_loss']:.4f}", f"{100 * e['train_acc']:.2f}%", f"{e['test_loss']:.4f}",
             f"{100 * e['test_acc']:.2f}%", f"{e['epoch_time_s']:.1f}", f"{e['images_per_s']:.0f}")
            for e in best["epochs"]]
    header = ["epoch", "train loss", "train acc", "test loss", "test acc", "s/epoch (training)", "images/s"]
    return f"{command(data)}, {when(data)}:\n\n" + table(header, rows)


def thread_runs():
    data = result("threads")
    names = {"policy": "policy, the default threads", "numpy first": "policy, NumPy imported (and its BLAS "
             "started) first", "one thread": "policy, 1 thread (`--threads 1`)", "spinning": "the libraries' "
             "spinning defaults"}
    rows = []
    for name, run in data["results"].items():
        numba = sorted(k["ratio"] for k in run["kernels"] if not k["kernel"].startswith("gemm"))
        big = [k["ratio"] for k in run["kernels"] if not k["kernel"].startswith("gemm") and k["alone_ms"] >= 0.05]
        gemms = [k["ratio"] for k in run["kernels"] if k["kernel"].startswith("gemm")]
        step = f"{run['step_ms_median']:.2f} ms ({run['step_ms_min']:.2f})"
        rows.append((names.get(name, name), run["threads"], step,
                     f"{numba[len(numba) // 2]:.2f} ({max(numba):.2f}; {max(big):.2f})",
                     f"{max(gemms):.2f}" if gemms else "-"))  # (-: every GEMM ran inside a Numba kernel)
    return (f"{command(data)}, {when(data)}:\n\n"
            + table(["run", "threads", "LeNet step, median (min)", "Numba kernels, loop / alone: median (worst; worst "
                     "of those >= 0.05 ms)", "conv GEMMs outside the kernels, loop / alone: worst"], rows))


def mutation_runs():
    rows = []
    for name in MUTATION_RUNS:
        data = result(name)
        if data is not None:
            run = data.get("run") or len(data["results"])
            rows.append((", ".join(mutated_files(data)), f"`{data['command']}`", run, data["mutants"],
                         f"**{data['caught']} of {data['behaviour_changing']}**",
                         data["counts"].get("invalid", 0), data["counts"].get("equivalent", 0),
                         f"{data['seconds'] / 60:.0f}"))
    return table(["files", "command", "mutants run", "of", "caught / behaviour-changing", "do not compile",
                  "equivalent", "minutes"], rows)


def winograd_rows(data, rows_of):
    """The rows of each layer of benchmarks/winograd.py's JSON (``rows_of(layer)``), the layer named on its first."""
    rows = []
    for layer in data["layers"]:
        label = f"{layer['layer']}, N={layer['shape'][0]}"
        rows += [(label if i == 0 else "", *cells) for i, cells in enumerate(rows_of(layer))]
    return rows


def winograd_route(layer, route):
    """'Winograd F(4x4), fused' for the JSON's 'winograd F(4x4,3x3)' on the fused path; other routes as they are."""
    if not route.startswith("winograd"):
        return route
    path = f", {layer['winograd_path']}" if "winograd_path" in layer else ""
    return f"Winograd {route.split()[1].split(',')[0]}){path}"


WINOGRAD = "Not measured: `python benchmarks/winograd.py`.\n"


def winograd_errors():
    data = result("winograd_cpu")
    if data is None:
        return WINOGRAD

    def rows_of(layer):
        return [(winograd_route(layer, route), *(f"{parts[p]['max_abs_over_max_ref']:.1e}" for p in ("y", "gx", "gw")))
                for route, parts in layer["float32_error"].items() if not route.endswith("float64")]

    exact = [e["max_abs_over_max_ref"] for layer in data["layers"] for route, parts in layer["float32_error"].items()
             if route.endswith("float64") for e in parts.values()]
    return (f"{command(data)}, {when(data)}: float32 against the float64 result, He-initialised weights, "
            f"unit-variance input and output gradient, max |error| / max |result|:\n\n"
            + table(["layer", "route", "y", "gx", "gw"], winograd_rows(data, rows_of))
            + f"\nWinograd in float64, against the same reference: at most {max(exact):.1e} of max |result|.\n")


def winograd_speed():
    data = result("winograd_cpu")
    if data is None:
        return WINOGRAD

    def rows_of(layer):
        times, torch = layer["times_ms"], layer["times_ms"].get("torch")  # no torch: its child failed
        ratios = {route: [torch[part] / t[part] if torch else None for part in ("forward", "fwd+bwd")]
                  for route, t in times.items()}
        tiles = [route for route in times if route.startswith("winograd")]
        best = [max(tiles, key=lambda route: ratios[route][i] or 0) for i in range(2)]  # the faster tile, per column

        def cell(route, i):
            ratio = ratios[route][i]
            return "-" if ratio is None else f"**{ratio:.2f}**" if route == best[i] else f"{ratio:.2f}"
        return [(f"torch {layer['torch_version']}" if route == "torch" else winograd_route(layer, route),
                 f"{t['forward']:.1f}", f"{t['fwd+bwd']:.1f}", cell(route, 0), cell(route, 1))
                for route, t in times.items()]

    torch_threads = sorted({layer["torch_threads"] for layer in data["layers"] if "torch_threads" in layer})
    return (f"{command(data)}, {when(data)}: float32, the fastest of {data['repeat']} calls after a warm-up, "
            f"scratchnet on {data['threads']} threads, torch in its own process on "
            f"{', '.join(map(str, torch_threads))} threads; ratio = torch's time / scratchnet's, in bold: the "
            f"faster Winograd tile:\n\n"
            + table(["layer", "route", "fwd ms", "fwd+bwd ms", "vs torch fwd", "vs torch fwd+bwd"],
                    winograd_rows(data, rows_of)))


SHARES = "Not measured: `python benchmarks/shares.py`.\n"


def shares_how(data):
    """What every shares block says first: the command, date and load, and how each number was taken."""
    rounds = f" in each of {data['rounds']} alternating rounds" if data["rounds"] > 1 else ""
    return f"{command(data)}, {when(data)}: float32, the fastest of {data['repeat']} calls{rounds}"


def shares_gemms():
    data = result("shares")
    if data is None:
        return SHARES
    rows = [(r["what"], f"{r['items']} x ({r['a'][-2]}x{r['a'][-1]})@({r['b'][-2]}x{r['b'][-1]})",
             f"{r['mflop_per_item']:.1f}", ms(r["matmul_ms"]), ms(r["shared_ms"]), ms(r["numba_ms"]),
             f"**{r['matmul_ms'] / r['numba_ms']:.2f}**") for r in data["gemms"]]
    return (f"{shares_how(data)}, {data['threads']} threads; x = `np.matmul`'s time / the stack's on Numba's "
            f"threads:\n\n"
            + table(["stack", "GEMMs", "MFLOP per GEMM", "`np.matmul` ms", "pool's threads ms", "Numba's threads ms",
                     "x"], rows))


def shares_chunks():
    data = result("shares")
    if data is None:
        return SHARES
    shared, in_turn = data["shared_chunk_bytes"] >> 10, data["in_turn_chunk_bytes"] >> 20
    rows = [(r["layer"], r["shape"][0], ms(r["in_turn_ms"]), ms(r["pool_ms"]), ms(r["shared_ms"]),
             f"**{r['in_turn_ms'] / r['shared_ms']:.2f}**") for r in data["chunks"]]
    return (f"{shares_how(data)}, {data['threads']} threads; x = the {in_turn} MB chunks' time / the {shared} KB "
            f"chunks' on Numba's threads:\n\n"
            + table(["layer", "batch", f"{in_turn} MB chunks in turn, ms", f"{shared} KB chunks, pool's threads ms",
                     f"{shared} KB chunks, Numba's threads ms", "x"], rows))


def elementwise_threads():
    data = result("shares")
    if data is None:
        return SHARES
    rows = [f"{row['what']}: **{ms(row['default_ms'])} ms** on {row['threads']} threads against "
            f"{ms(row['one_thread_ms'])} ms on one" for row in data["elementwise"]]
    return f"{shares_how(data)}: " + "; ".join(rows) + ".\n"


BLOCKS = {"headline": headline, "conv-layers": conv_layers, "auto-reasons": auto_reasons,
          "depthwise-layers": depthwise_layers, "resnet50-step": resnet50_step, "zoo-steps": zoo_steps,
          "lenet-runs": lenet_runs, "lenet-epochs": lenet_epochs, "distributed-runs": distributed_runs,
          "thread-runs": thread_runs, "shares-gemms": shares_gemms, "shares-chunks": shares_chunks,
          "elementwise-threads": elementwise_threads,
          "mutation-runs": mutation_runs, "winograd-error": winograd_errors, "winograd-speed": winograd_speed}


# --------------------------------------------------------------------------- the pages


def publish(check=False):
    """Rewrite every generated block (or, with ``check``, only list the stale ones); returns the problems."""
    problems, used = [], set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")

        def render(match):
            name = match["name"]
            used.add(name)
            if name not in BLOCKS:
                problems.append(f"{page.relative_to(REPO)}: no block named {name!r} (known: {', '.join(BLOCKS)})")
                return match[0]
            indent = match["indent"]
            body = "".join(indent + line if line.strip() else line for line in BLOCKS[name]().splitlines(True))
            if body != match["body"]:
                problems.append(f"{page.relative_to(REPO)}: block {name!r} "
                                f"{'differs from' if check else 'rewritten from'} benchmarks/results")
            return indent + match[2] + body + indent + match[5]

        new = BLOCK.sub(render, text)
        if new != text and not check:
            page.write_text(new, encoding="utf-8")
    problems += [f"block {name!r} is on no page" for name in BLOCKS if name not in used]
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; list the blocks that are stale")
    args = parser.parse_args(argv)
    problems = publish(check=args.check)
    for problem in problems:
        print(problem)
    if args.check and problems:
        print("run `python tools/publish_results.py` to write the numbers from benchmarks/results", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
