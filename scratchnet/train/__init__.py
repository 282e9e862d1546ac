"""The training tool, ``python -m scratchnet.train MODEL [options]`` (the options: cli.py's docstring).

Read it in this order, each module top to bottom:

    cli          the command line: options, the run's configuration, main() and its exit codes
    recipes      a model's recipe (declared beside the model) and the optimizer and schedule made of it
    datasets     the dataset table, the model built for a dataset, the transforms to the model's input
    tasks        classification and detection: loss, statistics, report line and curves of each
    loop         Run: the epoch loop, evaluation, checkpoints, and Ctrl-C / SIGTERM handling
    checkpoint   a run's nested state (weights, optimizer, random generators) in one .npz
    folder       the run folder: made, locked, written atomically with the user's file mode
    errors       exit codes and the exceptions that carry them

This file only re-exports.
"""
from ..data.transforms import RepeatChannels
from .checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from .cli import CONFIG_KEYS, build_parser, main, make_config, parse_model_args, run
from .datasets import DATASETS, build_model, load_datasets, pipelines
from .errors import EXIT_NAN, EXIT_SIGNAL, EXIT_USAGE, Interrupted, NonFiniteLoss, UsageError
from .folder import lock_run_folder, plot_curves, prepare_out, write_json
from .loop import Run, fit_with_signals
from .recipes import RECIPES, make_optimizer, make_scheduler, recipe_for, recipe_name
from .tasks import TASKS, Classification, Detection

__all__ = ["CONFIG_KEYS", "Classification", "DATASETS", "Detection", "EXIT_NAN", "EXIT_SIGNAL", "EXIT_USAGE",
           "Interrupted", "NonFiniteLoss", "RECIPES", "RepeatChannels", "Run", "TASKS", "UsageError",
           "build_model", "build_parser", "fit_with_signals", "load_checkpoint", "load_datasets", "lock_run_folder",
           "main", "make_config", "make_optimizer", "make_scheduler", "parse_model_args", "pipelines", "plot_curves",
           "prepare_out", "recipe_for", "recipe_name", "restore_rng", "rng_state", "run", "save_checkpoint",
           "write_json"]
