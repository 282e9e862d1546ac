"""One training run: model, data, optimizer and schedule, the epoch loop that ties them together, and
the signal handling that turns Ctrl-C / SIGTERM into a checkpoint and a clean exit."""
import math
import os
import signal
import sys
import time

import numpy as np

from .. import backend
from ..autograd import Tensor, no_grad
from ..data import DataLoader
from ..distributed.training import SingleProcess
from ..nn.serialization import save
from .checkpoint import restore_rng, rng_state, save_checkpoint
from .cpu_kernels import CpuKernels, KernelCompiles
from .datasets import DATASETS, build_model, load_datasets, pipelines
from .errors import EXIT_NAN, EXIT_SIGNAL, Interrupted, NonFiniteLoss, UsageError
from .folder import plot_curves, write_json
from .recipes import make_optimizer, make_scheduler
from .tasks import TASKS


def seconds_since_start():
    """Seconds since this process started (the OS's record of it: /proc on Linux), else since this module
    was imported."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            started_ticks = int(stat.read().rpartition(")")[2].split()[19])  # field 22: starttime, in clock ticks
            return float(uptime.read().split()[0]) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


class Run:
    """One training run: model, data, optimizer, schedule, and the loop that ties them together."""

    def __init__(self, config, device, out, progress, prefetch, debug_signal_after=None, ranks=None):
        self.config, self.device, self.out, self.progress = config, device, out, progress
        self.debug_signal_after = debug_signal_after
        self.ranks = ranks or SingleProcess(device)  # distributed runs: what differs per rank (distributed/training.py)
        # Numba's start-up (~0.3 s) overlaps building the model and loading the data; the first step
        # waits for it (cpu_kernels.ready): one thread at a time launches kernels, as every Numba layer allows.
        # A machine's first run compiles its kernels in the background meanwhile (train/cpu_kernels.py).
        self.cpu_kernels = CpuKernels(backend.get_default_dtype(), device, background=self.ranks.size == 1)
        backend.manual_seed(config["seed"])
        self.model = self.ranks.wrap_model(build_model(config).to(device))
        self.task = TASKS[DATASETS[config["dataset"]]["task"]](self.model, device)
        # every rank reads the data itself; a failure on any rank stops all of them, rank 0 saying why
        self.train_set, self.test_set = self.ranks.agree(
            lambda: load_datasets(config, self.model, download=not config.get("no_download"), progress=progress),
            UsageError)
        train_tf, test_tf = pipelines(config, self.model, getattr(self.train_set, "inputs", None))
        self.train_loader = DataLoader(self.train_set, config["batch_size"], shuffle=True,
                                       seed=self.ranks.augment_seed(config["seed"]), transform=train_tf,
                                       prefetch=prefetch,
                                       sampler=self.ranks.train_sampler(self.train_set, config["seed"]))
        self.test_loader = DataLoader(self.test_set, max(config["batch_size"], 256), transform=test_tf,
                                      prefetch=prefetch, sampler=self.ranks.test_sampler(self.test_set))
        self.optimizer = make_optimizer(config, self.model)
        self.scheduler = make_scheduler(config, self.optimizer, len(self.train_loader))
        self.epoch, self.batch, self.partial, self.metrics, self.best = 0, 0, None, [], None
        self.steps, self.stop_signal = 0, None

    # -- state
    def state(self):
        return {"model": self.model.state_dict(), "optimizer": self.ranks.optimizer_state(self.model, self.optimizer),
                "distributed": self.ranks.describe(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                **rng_state(self.device), "epoch": self.epoch, "batch": self.batch,
                "partial": self.partial, "metrics": self.metrics, "best": self.best, "config": self.config}

    def restore(self, state):
        self.model.load_state_dict(state["model"])
        self.ranks.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state, self.device)
        self.epoch, self.batch, self.partial = state["epoch"], state["batch"], state["partial"]
        self.metrics, self.best = state["metrics"], state["best"]

    def checkpoint(self):
        state = self.state()  # on every rank (a model-parallel state is gathered); rank 0 writes it
        if self.ranks.is_main:
            save_checkpoint(self.out / "checkpoint.npz", state)

    def save_weights(self, name):
        state = self.model.state_dict()
        if self.ranks.is_main:
            save(state, self.out / name)

    def lr(self):
        return self.optimizer.param_groups[0]["lr"]

    # -- the loop
    def fit(self):
        """Train the remaining epochs. A machine's first run then waits for its kernels compiling in the
        background, so that the next run finds them (train/cpu_kernels.py); a signal meanwhile, or a run that
        stops early, ends the compile instead."""
        try:
            self._epochs()
        except BaseException:
            self.cpu_kernels.finish(wait=False)
            raise
        self.cpu_kernels.finish(wait=True, stop=lambda: self.stop_signal is not None)

    def _epochs(self):
        epochs = self.config["epochs"]
        while self.epoch < epochs:
            record = self.train_epoch()
            record.update(self.evaluate())
            if not math.isfinite(record["test_loss"]):
                raise NonFiniteLoss(f"the test loss is {record['test_loss']} after epoch {self.epoch + 1}")
            self.metrics.append(record)
            print(f"epoch {record['epoch']}/{epochs}  {self.task.report(record)}  lr {record['lr']:.3g}  "
                  f"{record['epoch_time_s']:.1f}s ({record['images_per_s']:.0f} img/s)", flush=True)
            score = record[f"test_{self.task.metric}"]
            if self.best is None or score > self.best:
                self.best = score
                self.save_weights("best.npz")
            self.epoch, self.batch, self.partial = self.epoch + 1, 0, None
            self.checkpoint()
            if self.ranks.is_main:
                write_json(self.out / "metrics.json", self.metrics)
                plot_curves(self.out / "curves.png", self.metrics, self.task)
            stop = self.ranks.any_stop(self.stop_signal)  # a signal on any rank stops every rank
            if stop is not None:
                self.stop_signal = stop
                raise Interrupted()
        self.save_weights("final.npz")

    def train_epoch(self):
        from tqdm import tqdm

        loader = self.train_loader
        loader.set_epoch(self.epoch)
        self.model.train()
        stats = self.partial or {"loss_sum": 0.0, "correct": 0, "seen": 0, "time": 0.0}
        bar = tqdm(total=len(loader), initial=self.batch, desc=f"epoch {self.epoch + 1}/{self.config['epochs']}",
                   disable=not self.progress, leave=False, dynamic_ncols=True, file=sys.stderr)
        stats.setdefault("compile", 0.0)
        stats.setdefault("without_kernels", 0)
        started = time.perf_counter() - stats["time"]
        # inside the epoch's time: what the warm-up did not overlap counts, but not the kernels it compiled
        compiled = self.cpu_kernels.ready()
        stats["compile"] += compiled
        started += compiled
        deferred_before = self.cpu_kernels.steps_without
        with KernelCompiles(bar, self.cpu_kernels) as compiles:
            try:
                self._train_batches(loader, bar, stats, started, compiles)
            finally:
                stats["without_kernels"] += self.cpu_kernels.steps_without - deferred_before
        bar.close()
        seen = max(stats["seen"], 1)
        return {"epoch": self.epoch + 1, "train_loss": stats["loss_sum"] / seen, **self.task.train_scores(stats),
                "lr": stats.get("lr", self.lr()), "epoch_time_s": stats["time"],
                "images_per_s": stats["seen"] / max(stats["time"], 1e-9), "compile_time_s": stats["compile"],
                "steps_without_kernels": stats["without_kernels"], "first_step_s": stats.get("first_step_s")}

    def _train_batches(self, loader, bar, stats, started, compiles):
        """The epoch's steps from self.batch on. A kernel compiled on its first use on this machine is left
        out of stats["time"] (so the rate) and of the bar's rate and ETA, and counted in stats["compile"]."""
        for x, y in loader.batches(start=self.batch):
            inputs = Tensor(backend.to_device(x, self.device))
            output = self.model(inputs)
            loss = self.task.loss(output, y)
            correct = self.task.correct(output, y)
            # the global batch's sums (one rank: its own batch), so every rank sees the same loss
            loss_sum, seen, correct = self.ranks.step_totals(float(loss.item()) * len(x), len(x), correct)
            value = loss_sum / seen
            if not math.isfinite(value):
                raise NonFiniteLoss(f"the loss is {value} at epoch {self.epoch + 1}, batch {self.batch + 1}")
            self.optimizer.zero_grad()
            loss.backward()
            self.ranks.after_backward(self.model)  # data parallel: average the gradients over the ranks
            self.optimizer.step()
            stats["lr"] = self.lr()  # the rate this step used
            if self.scheduler is not None:
                self.scheduler.step()
            self.batch += 1
            self.steps += 1
            self.cpu_kernels.step_done()  # a machine's first run: its kernels compiling, then loaded
            if self.steps == 1:
                stats["first_step_s"] = seconds_since_start()
            stats["loss_sum"] += loss_sum
            stats["seen"] += seen
            stats["correct"] += correct
            compiled = compiles.new()
            if compiled:
                started += compiled
                stats["compile"] += compiled
                if not bar.disable:  # tqdm's clocks: of the elapsed time, and of its rate since the last update
                    bar.start_t += compiled
                    bar.last_print_t += compiled
            stats["time"] = time.perf_counter() - started
            bar.update(1)
            if self.progress and (self.batch % 20 == 0 or self.batch == len(loader)):  # formatting costs, not math
                bar.set_postfix({"loss": f"{stats['loss_sum'] / stats['seen']:.4f}",
                                 "img/s": f"{stats['seen'] / max(stats['time'], 1e-9):.0f}",
                                 **self.task.progress(stats)}, refresh=False)
            if self.debug_signal_after is not None and self.steps == self.debug_signal_after:
                signal.raise_signal(signal.SIGTERM)
            stop = self.ranks.any_stop(self.stop_signal)
            if stop is not None and self.batch < len(loader):
                self.stop_signal = stop
                bar.close()
                self.partial = stats
                self.checkpoint()
                raise Interrupted()

    def evaluate(self):
        """{"test_loss", "eval_time_s", and the task's test scores} over the whole test set."""
        self.cpu_kernels.ready(training=False)
        self.model.eval()
        started = time.perf_counter()
        with no_grad():
            outputs = ((self.task.test_forward(Tensor(backend.to_device(x, self.device))), y)
                       for x, y in self.test_loader)
            test_loss, scores = self.task.evaluate(outputs, self.ranks)
        return {"test_loss": test_loss, "eval_time_s": time.perf_counter() - started, **scores}


def fit_with_signals(job):
    """Run job.fit(); Ctrl-C / SIGTERM let the current batch finish, then checkpoint and exit.

    Only rank 0 speaks (a distributed run's ranks all stop together). A diverging run ends in one line:
    NumPy's overflow and invalid-value warnings on the way to the NaN are not printed, the check of the
    loss after every step says it once."""
    speak = job.ranks.is_main

    def on_signal(signum, frame):
        if job.stop_signal is None and speak:
            print(f"\n{signal.Signals(signum).name}: stopping after this batch and writing a checkpoint...",
                  file=sys.stderr, flush=True)
        job.stop_signal = signum

    previous = {s: signal.signal(s, on_signal) for s in EXIT_SIGNAL}
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            job.fit()
    except Interrupted:
        if speak:
            print(f"interrupted: checkpoint written to {job.out / 'checkpoint.npz'}; continue with "
                  f"`{job.ranks.resume_command(job.config['model'], job.out)}`", file=sys.stderr)
        return EXIT_SIGNAL[job.stop_signal]
    except NonFiniteLoss as exc:
        kept = (f"the last good checkpoint (end of epoch {job.epoch}) is kept in {job.out / 'checkpoint.npz'}"
                if job.epoch else "no epoch finished, so there is no checkpoint")
        if speak:
            print(f"error: {exc}; training stopped. {kept}. Try a lower --lr (now {job.config['lr']}) or "
                  f"--warmup.", file=sys.stderr)
        return EXIT_NAN
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    best = job.best if job.best is not None else float("nan")
    print(f"done: best test {job.task.metric} {100 * best:.2f}%; weights, metrics.json and curves.png in {job.out}")
    return 0
