"""Train a model from the zoo: ``python -m scratchnet.train MODEL [options]``.

    python -m scratchnet.train lenet                      # LeNet-5 on Fashion-MNIST, the paper's 32x32 input
    python -m scratchnet.train resnet20 --epochs 160      # CIFAR-10, pad-4 crop + flip, SGD 0.1, step schedule
    python -m scratchnet.train fast_yolov1 --epochs 30    # the synthetic shapes, reports mAP@0.5
    python -m scratchnet.train lenet --resume runs/lenet5-fashion-mnist

Every model has a recipe (dataset, input size, normalisation, augmentation,
optimizer and schedule) so the bare command does the right thing; each option
overrides its part. The run folder (``--out``) receives metrics.json,
curves.png, config.json, best.npz, final.npz and checkpoint.npz; the
checkpoint is rewritten atomically after every epoch and when Ctrl-C or
SIGTERM arrives, and ``--resume`` continues from it so that the final weights
are bit-identical to those of an uninterrupted run.

Exit codes: 0 done, 1 stopped on a NaN/inf loss, 2 bad input or a file
problem (one line, no traceback; nothing existing is overwritten), 130/143
interrupted by SIGINT/SIGTERM (checkpoint written). The run folder is locked
while a run uses it (``scratchnet/runlock.py``): a second run on the same
``--out`` stops with exit 2 naming the first one's process id.
"""
import argparse
import ast
import shlex
import signal
import sys
import traceback
from pathlib import Path

from .. import backend
from .. import functional as F
from ..cli import ArgumentParser, command, integer, real, report
from ..distributed import DistributedError, launch_rank, launch_size, launched_by_mpi
from ..distributed.training import abort_other_ranks, resume_command, setup as setup_ranks
from ..models.registry import model_name
from ..nn.serialization import load
from .checkpoint import load_checkpoint
from .datasets import DATASETS
from .errors import EXIT_SIGNAL, EXIT_USAGE, UsageError
from .folder import lock_run_folder, prepare_out, write_json
from .loop import Run, fit_with_signals
from .recipes import recipe_for

PROG = "python -m scratchnet.train"

CONFIG_KEYS = ("model", "dataset", "epochs", "batch_size", "lr", "momentum", "weight_decay", "optimizer",
               "schedule", "warmup", "augment", "ten_crop", "seed", "limit", "test_limit", "model_args", "data_dir")
AUGMENTATIONS = ("crop", "patches", "flip", "lighting")


def build_parser():
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a name from scratchnet.models.list_models() (e.g. lenet, resnet20, fast_yolov1)")
    p.add_argument("--dataset", choices=sorted(DATASETS), help="default: the model's recipe")
    p.add_argument("--data-dir", help="folder holding the dataset files (else $SCRATCHNET_DATA, the cache, ...)")
    p.add_argument("--no-download", action="store_true", help="never download missing dataset files")
    p.add_argument("--device", default="cpu", help="cpu or gpu")
    p.add_argument("--epochs", type=integer(1))
    p.add_argument("--batch-size", type=integer(1), help="per rank under --distributed")
    p.add_argument("--lr", type=real(above=0))
    p.add_argument("--momentum", type=real(minimum=0))
    p.add_argument("--weight-decay", type=real(minimum=0))
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    p.add_argument("--schedule", choices=["step", "cosine", "none"])
    p.add_argument("--warmup", type=real(minimum=0), help="epochs of linear warm-up from lr/10 (fractions allowed)")
    p.add_argument("--augment", help="comma-separated subset of crop (CIFAR's pad and crop), patches (AlexNet's "
                   "random patches of images rescaled by 256/224), flip, lighting (AlexNet's PCA colour noise), "
                   "or 'none'")
    p.add_argument("--ten-crop", action="store_true", help="evaluate as AlexNet: the softmax averaged over ten "
                   "patches per test image (four corners, centre, and their mirror images)")
    p.add_argument("--seed", type=integer(0), default=0)
    p.add_argument("--out", help="run folder (default runs/MODEL-DATASET)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    p.add_argument("--eval-only", action="store_true", help="evaluate (weights from --resume DIR or --weights)")
    p.add_argument("--weights", help="a .npz of model weights to start from (or to evaluate)")
    p.add_argument("--limit", type=integer(1), help="train on the first N training samples")
    p.add_argument("--test-limit", type=integer(1), help="evaluate on the first N test samples")
    p.add_argument("--conv-algo", help="the global conv2d route: " + ", ".join(F.conv.CONV_ALGOS)
                   + " (scratchnet.functional.conv.set_conv_algo; docs/kernels.md)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra constructor option, e.g. --model-arg width_mult=0.25 (repeatable)")
    p.add_argument("--prefetch", type=integer(0), default=2, help="batches prepared ahead in a background thread")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (epoch summaries only)")
    p.add_argument("--threads", type=integer(1), help="CPU threads for BLAS and the Numba kernels alike "
                                               "(default: every CPU, or $SCRATCHNET_NUM_THREADS)")
    p.add_argument("--distributed", action="store_true", help="data parallel over the processes of an MPI launch "
                   "(mpirun -n 2 python -m scratchnet.train ... --distributed); --batch-size is per rank")
    p.add_argument("--model-parallel", action="store_true", help="AlexNet's two-GPU split over 2 ranks (mpirun -n 2)")
    p.add_argument("--sync-batchnorm", action="store_true", help="with --distributed: BatchNorm over the global batch")
    p.add_argument("--dist-timeout", type=real(above=0),
                   help="seconds to wait for the other ranks before failing (300)")
    # For tests: raise SIGTERM in this process after N optimizer steps (exercises the real handler).
    p.add_argument("--debug-signal-after", type=integer(1), help=argparse.SUPPRESS)
    return p


def make_config(args):
    """The full run configuration: the model's recipe, overridden by whatever the command line gave."""
    recipe = recipe_for(args.model)
    config = {"model": args.model}
    for key in ("dataset", "epochs", "batch_size", "lr", "momentum", "weight_decay", "optimizer", "schedule",
                "warmup"):
        value = getattr(args, key)
        config[key] = getattr(recipe, key) if value is None else value
    if args.augment is None:
        config["augment"] = list(recipe.augment)
    else:
        config["augment"] = [] if args.augment == "none" else [a.strip() for a in args.augment.split(",") if a]
        unknown = set(config["augment"]) - set(AUGMENTATIONS)
        if unknown:
            raise UsageError(f"--augment: unknown {', '.join(sorted(unknown))}; choose from {', '.join(AUGMENTATIONS)}")
    if {"crop", "patches"} <= set(config["augment"]):
        raise UsageError("--augment: crop and patches are two ways of cropping; choose one")
    config["ten_crop"] = args.ten_crop
    config.update(seed=args.seed, limit=args.limit, test_limit=args.test_limit, data_dir=args.data_dir,
                  model_args=parse_model_args(args.model_arg))
    detector, wants_detection = recipe.task == "detection", DATASETS[config["dataset"]]["task"] == "detection"
    if detector != wants_detection:
        raise UsageError(f"model {args.model} is {'a detector' if detector else 'a classifier'} but dataset "
                         f"{config['dataset']} is for {'detection' if wants_detection else 'classification'}; "
                         f"use --dataset {'shapes' if detector else 'fashion-mnist, mnist or cifar10'}")
    if "lighting" in config["augment"] and DATASETS[config["dataset"]]["channels"] != 3:
        raise UsageError(f"--augment lighting needs RGB images; {config['dataset']} is grayscale")
    if config["ten_crop"] and wants_detection:
        raise UsageError("--ten-crop averages a classifier's softmax over ten patches; it is not for detection")
    return config


def check_same_model(asked, state, folder, device):
    """``--resume`` continues the run the folder holds: a different model on the command line is refused,
    with the command that continues that run (on as many ranks as wrote it)."""
    saved = state["config"]["model"]
    if model_name(saved) == _known_name(asked):
        return
    run = state.get("distributed") or {"mode": None, "ranks": 1}
    raise UsageError(f"--resume {folder}: that folder holds a {saved} run, not {asked}; continue it with "
                     f"`{resume_command(saved, folder, run, device)}`, or train {asked} in a new folder "
                     f"(--out DIR)")


def _known_name(name):
    try:
        return model_name(name)
    except ValueError:
        return None


def load_weights(model, path):
    try:
        model.load_state_dict(load(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--weights {path}: {exc}") from None


def parse_model_args(pairs):
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--model-arg expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value  # a bare word: a string option such as variant=classic
    return options


def command_line(argv):
    """The command a user types for these arguments, quoted for a shell."""
    return shlex.join([*PROG.split(), *argv])


@command
def main(argv=None):
    """Exit codes: 0 done, 1 NaN/inf loss, 2 bad input (scratchnet/cli.py's one line), 130/143 interrupted."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    held = []  # the run folder's lock, released however the run ends
    try:
        return run(args, held, argv)
    except (DistributedError, OSError) as exc:  # met during the run, on this rank alone: end every rank of the job
        report(exc, every_rank=True)
        abort_other_ranks(EXIT_USAGE)
        return EXIT_USAGE
    except UsageError:
        raise  # every rank meets it alike (the ranks agree on files one of them reads): scratchnet/cli.py prints it
    except Exception:
        if args.distributed or args.model_parallel:  # the other ranks may be waiting for this one: end them too
            traceback.print_exc()
            abort_other_ranks(1)
        raise
    except KeyboardInterrupt:  # Ctrl-C before training started (while loading data): nothing to save
        if launch_rank() in (None, 0):
            print("\ninterrupted before training started", file=sys.stderr)
        return EXIT_SIGNAL[signal.SIGINT]
    finally:
        for lock in held:
            lock.release()


def run(args, held=None, argv=None):
    try:  # first, before any data is read: a missing GPU fails at once
        device = backend.check_device(args.device)
    except backend.DeviceError as exc:
        raise UsageError(str(exc)) from None
    if args.threads is not None:
        try:
            backend.set_num_threads(args.threads)
        except ValueError as exc:
            raise UsageError(f"--threads: {exc}") from None
    if args.conv_algo is not None:
        try:
            F.conv.set_conv_algo(args.conv_algo)
        except ValueError as exc:
            raise UsageError(f"--conv-algo: {exc}") from None
    if (args.distributed or args.model_parallel) and not launched_by_mpi():
        raise UsageError(f"{'--distributed' if args.distributed else '--model-parallel'} needs its processes started "
                         f"by MPI: run `mpirun -n 2 {command_line(argv or [])}` (or srun on Slurm)")
    launched = launch_size() or 1
    if launched > 1 and not (args.distributed or args.model_parallel):  # N copies of one run, one --out
        raise UsageError(f"this command was started by MPI as {launched} processes but without --distributed, so "
                         f"each would train the same run alone; add it: "
                         f"`mpirun -n {launched} {command_line([*(argv or []), '--distributed'])}`")
    try:  # --distributed / --model-parallel: join the MPI launch (else one process)
        ranks = setup_ranks(args.distributed, args.model_parallel, device, args.dist_timeout, args.sync_batchnorm)
    except (DistributedError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if args.eval_only and not (args.resume or args.weights):
        raise UsageError("--eval-only needs trained weights: pass --resume DIR or --weights FILE")

    resume_state = None
    if args.resume:
        resume_dir = Path(args.resume)
        # rank 0 reads the checkpoint; every rank gets it (or rank 0's error, so that none waits for it)
        resume_state = ranks.read_on_main(lambda: load_checkpoint(resume_dir / "checkpoint.npz"), UsageError)
        if not isinstance(resume_state, dict) or "model" not in (resume_state.get("config") or {}):
            raise UsageError(f"--resume: {resume_dir / 'checkpoint.npz'} is not a scratchnet training checkpoint "
                             f"(it names no run config)")
        config = resume_state["config"]  # the run continues with its own settings
        check_same_model(args.model, resume_state, resume_dir, device)
        try:
            ranks.check_resume(resume_state, resume_dir)
        except DistributedError as exc:
            raise UsageError(str(exc)) from None
        if args.data_dir:  # ... but the data may have moved
            config["data_dir"] = args.data_dir
        if args.ten_crop:  # ... and may be evaluated with ten patches per image
            if config.get("dataset") in DATASETS and DATASETS[config["dataset"]]["task"] == "detection":
                raise UsageError("--ten-crop averages a classifier's softmax over ten patches; it is not for "
                                 "detection")
            config["ten_crop"] = True
        out = Path(args.out) if args.out else resume_dir
    else:
        config = make_config(args)
        out = Path(args.out or f"runs/{config['model']}-{config['dataset']}")
    config["no_download"] = args.no_download
    prepare_out(out)
    if ranks.is_main:  # rank 0 owns the run folder
        lock_run_folder(out, [] if held is None else held)

    try:
        job = Run(config, device, out, progress=not args.no_progress and ranks.is_main, prefetch=args.prefetch,
                  debug_signal_after=args.debug_signal_after, ranks=ranks)
    except ValueError as exc:  # e.g. --model-parallel with a model that has no two-tower split
        raise UsageError(str(exc)) from None
    if resume_state is not None:
        try:
            job.restore(resume_state)
        except (KeyError, ValueError, TypeError) as exc:  # StateDictError is a KeyError
            raise UsageError(f"--resume: the checkpoint in {args.resume} does not fit this run: {exc}") from None
        print(f"resuming {out}: epoch {job.epoch + 1}, batch {job.batch + 1} of {len(job.train_loader)}", flush=True)
    if args.weights:
        ranks.agree(lambda: load_weights(job.model, args.weights), UsageError)  # each rank reads the file

    if args.eval_only:
        record = job.evaluate()
        metric = job.task.metric
        errors = (f"  top-1 error {100 * record['test_top1_error']:.2f}%, top-5 {100 * record['test_top5_error']:.2f}%"
                  if "test_top5_error" in record else "")
        print(f"test loss {record['test_loss']:.4f}  test {metric} {100 * record[f'test_{metric}']:.2f}%{errors}  "
              f"({len(job.test_set)} samples{', ten patches each' if job.config.get('ten_crop') else ''})")
        if ranks.is_main:
            write_json(out / "eval.json", record)
        return 0

    if ranks.is_main:
        write_json(out / "config.json", {k: config.get(k) for k in CONFIG_KEYS}
                   | {"device": device, "conv_algo": args.conv_algo, "distributed": ranks.describe()})
    print(f"training {config['model']} ({job.model.num_parameters():,} parameters) on {config['dataset']} "
          f"({len(job.train_set)} train / {len(job.test_set)} test) for {config['epochs']} epochs -> {out}",
          flush=True)
    return fit_with_signals(job)
