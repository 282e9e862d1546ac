"""``python -m scratchnet.study TOOL ...``: one subcommand per study, each calling that study's runner."""
import argparse
import sys
from pathlib import Path

from .. import backend
from ..data import DatasetError
from .claims import CLAIMS, DEFAULT_DOCS, claims
from .claims import DATASETS as CLAIM_DATASETS
from .claims import DEFAULT_OUT as CLAIMS_OUT
from .common import DEFAULT_OUT
from .cost import cost
from .deconv import deconv
from .degradation import MODELS as DEGRADATION_MODELS
from .degradation import degradation
from .features import features
from .gradflow import gradflow
from .joins import joins
from .landscape import MODELS as LANDSCAPE_MODELS
from .landscape import landscape
from .se_weights import se_weights

DESCRIPTION = "Study tools: instruments for *why* these architectures work, each ending in a picture and a table."


def build_parser():
    p = argparse.ArgumentParser(prog="python -m scratchnet.study", description=DESCRIPTION)
    p.add_argument("--out", help="folder for the PNGs and JSON (default runs/study; for claims benchmarks/results)")
    p.add_argument("--data-dir", help="folder holding fashion-mnist/ (else $SCRATCHNET_DATA, the cache, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="CPU threads for BLAS and the Numba kernels (sn.set_num_threads)")
    sub = p.add_subparsers(dest="tool", required=True)

    g = sub.add_parser("gradflow", help="per-layer gradient norms at init and after N steps")
    g.add_argument("models", nargs="+", help="zoo names, or deep_sigmoid / deep_relu / deep_tanh (20-layer MLPs)")
    g.add_argument("--steps", type=int, default=20)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--side", type=int, help="input side (default: the model's native input)")
    g.set_defaults(run=lambda a, common: gradflow(a.models, a.steps, a.batch_size, a.lr, a.side, **common))

    j = sub.add_parser("joins", help="gradient through shortcut vs residual branch, and across concat branches")
    j.add_argument("models", nargs="+")
    j.add_argument("--batch-size", type=int, default=8)
    j.add_argument("--side", type=int)
    j.set_defaults(run=lambda a, common: joins(a.models, a.batch_size, a.side, **common))

    d = sub.add_parser("degradation", help="plain vs residual nets: training error per iteration (He et al. Fig. 6)")
    d.add_argument("--models", nargs="+", default=list(DEGRADATION_MODELS))
    d.add_argument("--epochs", type=float, default=1, help="epochs; a fraction stops part-way (default 1)")
    d.add_argument("--limit", type=int, help="training images (default: all 60,000)")
    d.add_argument("--test-limit", type=int, default=10000, help="test images for the test error")
    d.add_argument("--batch-size", type=int, default=128)
    d.add_argument("--lr", type=float, default=0.1)
    d.add_argument("--log-every", type=int, default=20, help="iterations per point of the training-error curve")
    d.set_defaults(run=lambda a, common: degradation(a.models, a.epochs, a.limit, a.batch_size, a.lr, a.test_limit,
                                                     a.log_every, **common))

    s = sub.add_parser("landscape", help="loss landscape of plain vs residual nets: 1-D, 2-D, top Hessian eigenvalue "
                       "(Li et al. 2018)")
    s.add_argument("models", nargs="*", default=list(LANDSCAPE_MODELS),
                   help="CIFAR-style nets (default: plain20 resnet20 plain56 resnet56)")
    s.add_argument("--steps", type=int, default=100, help="SGD steps of training before measuring (default 100)")
    s.add_argument("--batch-size", type=int, default=64, help="training batch (default 64)")
    s.add_argument("--lr", type=float, default=0.05, help="training learning rate, momentum 0.9 (default 0.05)")
    s.add_argument("--weights-dir", help="load NAME.npz from here instead of training (e.g. a previous run's "
                   "OUT/landscape)")
    s.add_argument("--eval-images", type=int, default=128,
                   help="training images every loss (and gradient) is measured on (default 128)")
    s.add_argument("--eval-batch", type=int, default=128, help="batch for those evaluations (default 128)")
    s.add_argument("--points", type=int, default=11, help="points of the 1-D curves (default 11)")
    s.add_argument("--grid", type=int, default=9, help="the 2-D surface is GRID x GRID points (default 9)")
    s.add_argument("--span", type=float, default=1.0, help="directions scaled from -SPAN to SPAN (default 1)")
    s.add_argument("--hessian-iterations", type=int, default=10, help="power iterations, 2 gradients each "
                   "(default 10)")
    s.add_argument("--hessian-step", type=float, default=1e-3,
                   help="finite-difference step along the unit vector (default 1e-3; also re-taken at /10, x10)")
    s.add_argument("--no-recalibrate", dest="recalibrate", action="store_false",
                   help="keep the BN running statistics training left (default: re-estimate them at the weights "
                   "measured, on --eval-images other training images)")
    s.set_defaults(run=lambda a, common: landscape(
        a.models, a.steps, a.batch_size, a.lr, a.eval_images, a.eval_batch, a.points, a.grid, a.span,
        a.hessian_iterations, a.hessian_step, a.weights_dir, a.recalibrate, **common))

    for name, help_text in (("deconv", "DeconvNet projections of a layer's strongest activations"),
                            ("features", "first-layer filters and a layer's feature maps"),
                            ("se", "SE blocks' channel weights per class")):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("--model", default="se_resnet20" if name == "se" else "lenet")
        s.add_argument("--weights", help=".npz weights (e.g. best.npz from scratchnet.train); else train briefly")
        s.add_argument("--steps", type=int, default=100 if name == "se" else 200,
                       help="SGD steps of the brief training when no --weights")
        s.add_argument("--batch-size", type=int, default=32)
        if name != "se":
            s.add_argument("--layer", type=int, default=None if name == "deconv" else 1, help="conv layer (1-based)")
    sub.choices["deconv"].set_defaults(run=lambda a, common: deconv(a.model, a.weights, a.layer, a.steps,
                                                                    a.batch_size, **common))
    sub.choices["features"].set_defaults(run=lambda a, common: features(a.model, a.weights, a.layer, steps=a.steps,
                                                                        batch_size=a.batch_size, **common))
    sub.choices["se"].set_defaults(run=lambda a, common: se_weights(a.model, a.weights, a.steps, a.batch_size,
                                                                    **common))

    c = sub.add_parser("cost", help="parameters vs multiply-adds for the zoo")
    c.add_argument("--models", nargs="*")
    c.set_defaults(run=lambda a, common: cost(a.models, common["out"]))

    k = sub.add_parser("claims", help="the study notes' claims, each checked: cost claims exact, training claims "
                       "over seeds; JSON and figures in OUT/claims, the page docs/claims.md regenerated")
    k.add_argument("names", nargs="*", metavar="NAME", help="claims to run (default: all; --list names them)")
    size = k.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick",
                      help="the default: every claim in about 15 minutes on 2 cores")
    size.add_argument("--full", dest="size", action="store_const", const="full", help="the longer budgets")
    size.add_argument("--tiny", dest="size", action="store_const", const="tiny",
                      help="seconds per claim (what the tests run)")
    k.add_argument("--seeds", type=int, help="seeds per training claim, from --seed (default: 3, --full 5, --tiny 2)")
    k.add_argument("--datasets", nargs="+", default=list(CLAIM_DATASETS), choices=CLAIM_DATASETS,
                   help="where the training claims train (default: both; CIFAR-10 is skipped when its files are "
                   "not here)")
    k.add_argument("--docs", default=str(DEFAULT_DOCS), help=f"the page regenerated from the JSON (default "
                   f"{DEFAULT_DOCS})")
    k.add_argument("--no-docs", dest="docs", action="store_const", const=None, help="do not write the page")
    k.add_argument("--list", action="store_true", help="list the claims and exit")
    k.set_defaults(size="quick", default_out=CLAIMS_OUT, run=run_claims)
    return p


def run_claims(args, common):
    if args.list:
        for name, claim in CLAIMS.items():
            print(f"{name:<24}{claim.kind:<10}{claim.source}")
        return
    if args.threads is None:  # the claims' nets are small: one thread runs them faster than two
        backend.set_num_threads(1)
    claims(args.names, args.size, args.seeds, args.datasets, common["data_dir"], common["out"], args.docs,
           first_seed=common["seed"])


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = Path(args.out or getattr(args, "default_out", DEFAULT_OUT))
    try:
        if args.threads is not None:
            backend.set_num_threads(args.threads)
        args.run(args, dict(data_dir=args.data_dir, out=out, seed=args.seed))
    except (DatasetError, ValueError, backend.DeviceError) as exc:
        print(f"study {args.tool}: {exc}", file=sys.stderr)
        return 2
    if not getattr(args, "list", False):
        print(f"wrote {out}/")
    return 0

