"""``python -m scratchnet.study TOOL ...``: one subcommand per study, each calling that study's runner."""
import argparse
from pathlib import Path

from .. import backend
from ..cli import ArgumentParser, UsageError, command, integer, real
from .claims import CLAIMS, DEFAULT_DOCS, claims
from .claims import DATASETS as CLAIM_DATASETS
from .claims import DEFAULT_OUT as CLAIMS_OUT
from .common import DEFAULT_OUT
from .cost import cost
from .deconv import deconv
from .deformable import deformable
from .degradation import MODELS as DEGRADATION_MODELS
from .degradation import degradation
from .features import features
from .gradflow import gradflow
from .joins import joins
from .landscape import MODELS as LANDSCAPE_MODELS
from .landscape import landscape
from .se_weights import se_weights

DESCRIPTION = "Study tools: instruments for *why* these architectures work, each ending in a picture and a table."


def common_options(parser, defaults):
    """The options every study takes, accepted before the study's name and after it: the main parser
    holds the defaults; each study's parser takes the same options with no default of its own, so a
    value given after the name wins and an absent one leaves the main parser's in place."""
    default = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--out", default=default(None),
                        help="folder for the PNGs and JSON (default runs/study; for claims benchmarks/results)")
    parser.add_argument("--data-dir", default=default(None),
                        help="folder holding fashion-mnist/ (else $SCRATCHNET_DATA, the cache, ...)")
    parser.add_argument("--seed", type=integer(0), default=default(0))
    parser.add_argument("--threads", type=integer(1), default=default(None),
                        help="CPU threads for BLAS and the Numba kernels (sn.set_num_threads)")


def build_parser():
    p = ArgumentParser(prog="python -m scratchnet.study", description=DESCRIPTION)
    common_options(p, defaults=True)
    sub = p.add_subparsers(dest="tool", required=True, parser_class=ArgumentParser)

    def study(name, **kwargs):
        parser = sub.add_parser(name, **kwargs)
        common_options(parser, defaults=False)
        return parser

    g = study("gradflow", help="per-layer gradient norms at init and after N steps")
    g.add_argument("models", nargs="+", help="zoo names, or deep_sigmoid / deep_relu / deep_tanh (20-layer MLPs)")
    g.add_argument("--steps", type=integer(0), default=20)
    g.add_argument("--batch-size", type=integer(1), default=16)
    g.add_argument("--lr", type=real(above=0), default=0.01)
    g.add_argument("--side", type=integer(1), help="input side (default: the model's native input)")
    g.set_defaults(run=lambda a, common: gradflow(a.models, a.steps, a.batch_size, a.lr, a.side, **common))

    j = study("joins", help="gradient through shortcut vs residual branch, and across concat branches")
    j.add_argument("models", nargs="+")
    j.add_argument("--batch-size", type=integer(1), default=8)
    j.add_argument("--side", type=integer(1), help="input side (default: the model's native input)")
    j.set_defaults(run=lambda a, common: joins(a.models, a.batch_size, a.side, **common))

    d = study("degradation", help="plain vs residual nets: training error per iteration (He et al. Fig. 6)")
    d.add_argument("--models", nargs="+", default=list(DEGRADATION_MODELS))
    d.add_argument("--epochs", type=real(above=0), default=1, help="epochs; a fraction stops part-way (default 1)")
    d.add_argument("--limit", type=integer(1), help="training images (default: all 60,000)")
    d.add_argument("--test-limit", type=integer(1), default=10000, help="test images for the test error")
    d.add_argument("--batch-size", type=integer(1), default=128)
    d.add_argument("--lr", type=real(above=0), default=0.1)
    d.add_argument("--log-every", type=integer(1), default=20, help="iterations per point of the training-error curve")
    d.set_defaults(run=lambda a, common: degradation(a.models, a.epochs, a.limit, a.batch_size, a.lr, a.test_limit,
                                                     a.log_every, **common))

    s = study("landscape", help="loss landscape of plain vs residual nets: 1-D, 2-D, top Hessian eigenvalue "
              "(Li et al. 2018)")
    s.add_argument("models", nargs="*", default=list(LANDSCAPE_MODELS),
                   help="CIFAR-style nets (default: plain20 resnet20 plain56 resnet56)")
    s.add_argument("--steps", type=integer(0), default=100,
                   help="SGD steps of training before measuring (default 100)")
    s.add_argument("--batch-size", type=integer(1), default=64, help="training batch (default 64)")
    s.add_argument("--lr", type=real(above=0), default=0.05,
                   help="training learning rate, momentum 0.9 (default 0.05)")
    s.add_argument("--weights-dir", help="load NAME.npz from here instead of training (e.g. a previous run's "
                   "OUT/landscape)")
    s.add_argument("--eval-images", type=integer(1), default=128,
                   help="training images every loss (and gradient) is measured on (default 128)")
    s.add_argument("--eval-batch", type=integer(1), default=128, help="batch for those evaluations (default 128)")
    s.add_argument("--points", type=integer(2), default=11, help="points of the 1-D curves (default 11)")
    s.add_argument("--grid", type=integer(2), default=9, help="the 2-D surface is GRID x GRID points (default 9)")
    s.add_argument("--span", type=real(above=0), default=1.0,
                   help="directions scaled from -SPAN to SPAN (default 1)")
    s.add_argument("--hessian-iterations", type=integer(1), default=10, help="power iterations, an exact "
                   "Hessian-vector product each (default 10)")
    s.add_argument("--hessian-step", type=real(above=0), default=1e-3, help="finite-difference step along the top "
                   "eigenvector, for the comparison with the exact number (default 1e-3; also at /10, x10)")
    s.add_argument("--no-recalibrate", dest="recalibrate", action="store_false",
                   help="keep the BN running statistics training left (default: re-estimate them at the weights "
                   "measured, on --eval-images other training images)")
    s.set_defaults(run=lambda a, common: landscape(
        a.models, a.steps, a.batch_size, a.lr, a.eval_images, a.eval_batch, a.points, a.grid, a.span,
        a.hessian_iterations, a.hessian_step, a.weights_dir, a.recalibrate, **common))

    for name, help_text in (("deconv", "DeconvNet projections of a layer's strongest activations"),
                            ("features", "first-layer filters and a layer's feature maps"),
                            ("se", "SE blocks' channel weights per class")):
        s = study(name, help=help_text)
        s.add_argument("--model", default="se_resnet20" if name == "se" else "lenet")
        s.add_argument("--weights", help="DEFAULT (or a torchvision weight name): ImageNet's pretrained weights, "
                                         "studied on the sample photographs; or a weights file (.npz from "
                                         "scratchnet.train, .safetensors, .pth); else train briefly")
        s.add_argument("--steps", type=integer(0), default=100 if name == "se" else 200,
                       help="SGD steps of the brief training when no --weights")
        s.add_argument("--batch-size", type=integer(1), default=32)
        if name != "features":
            s.add_argument("--images", type=integer(1), default=500 if name == "se" else 64,
                           help="test images measured (default %(default)s)")
        if name != "se":
            s.add_argument("--layer", type=integer(1), default=None if name == "deconv" else 1,
                           help="conv layer (1-based)")
    sub.choices["deconv"].set_defaults(run=lambda a, common: deconv(a.model, a.weights, a.layer, a.steps,
                                                                    a.batch_size, a.images, **common))
    sub.choices["features"].set_defaults(run=lambda a, common: features(a.model, a.weights, a.layer, steps=a.steps,
                                                                        batch_size=a.batch_size, **common))
    sub.choices["se"].set_defaults(run=lambda a, common: se_weights(a.model, a.weights, a.steps, a.batch_size,
                                                                    a.images, **common))

    f = study("deformable", help="regular vs deformable nets on scaled, rotated, shifted Fashion-MNIST, "
              "and where the deformable kernels sample (Dai et al. 2017, Zhu et al. 2019)")
    f.add_argument("--seeds", type=integer(1), default=3, help="runs of each net, seeds SEED, SEED+1, ... (default 3)")
    f.add_argument("--steps", type=integer(1), default=300, help="SGD steps per run (default 300)")
    f.add_argument("--batch-size", type=integer(1), default=64)
    f.add_argument("--lr", type=real(above=0), default=0.05,
                   help="learning rate, cosine decay, momentum 0.9 (default 0.05)")
    f.add_argument("--train-images", type=integer(1), default=19200, help="transformed training images per seed")
    f.add_argument("--test-images", type=integer(1), default=2000, help="transformed test images (one fixed set)")
    f.add_argument("--stats-images", type=integer(1), default=500, help="test images the offset statistics use")
    f.add_argument("--canvas", type=integer(4), default=36, help="image side, a multiple of 4 (default 36)")
    f.add_argument("--version", choices=["v1", "v2"], default="v1", help="DCN v1 (offsets) or v2 (and modulation)")
    f.add_argument("--offset-lr-mult", type=real(minimum=0), help="the offset branches' learning rate multiplier "
                   "(default: the papers' 1 for v1, 0.1 for v2)")
    f.set_defaults(run=lambda a, common: deformable(a.seeds, a.steps, a.batch_size, a.lr, a.train_images,
                                                    a.test_images, a.stats_images, a.canvas, a.version,
                                                    a.offset_lr_mult, **common))

    c = study("cost", help="parameters vs multiply-adds for the zoo")
    c.add_argument("--models", nargs="*")
    c.set_defaults(run=lambda a, common: cost(a.models, common["out"]))

    k = study("claims", help="the study notes' claims, each checked: cost claims exact, training claims over seeds; "
              "JSON and figures in OUT/claims, the page docs/claims.md regenerated")
    k.add_argument("names", nargs="*", metavar="NAME", help="claims to run (default: all; --list names them)")
    size = k.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick",
                      help="the default: every claim in about 15 minutes on 2 cores")
    size.add_argument("--full", dest="size", action="store_const", const="full", help="the longer budgets")
    size.add_argument("--tiny", dest="size", action="store_const", const="tiny",
                      help="seconds per claim (what the tests run)")
    k.add_argument("--seeds", type=integer(1), help="seeds per training claim, from --seed (default: 3, --full 5, "
                   "--tiny 2)")
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


@command
def main(argv=None):
    args = build_parser().parse_args(argv)
    out = Path(args.out if args.out is not None else getattr(args, "default_out", DEFAULT_OUT))
    if args.threads is not None:
        backend.set_num_threads(args.threads)
    try:
        args.run(args, dict(data_dir=args.data_dir, out=out, seed=args.seed))
    except (ValueError, TypeError) as exc:  # a study's own check of its input (a layer, a model, a size)
        raise UsageError(f"study {args.tool}: {exc}") from None
    if not getattr(args, "list", False):
        print(f"wrote {out}/")
    return 0
