"""``python -m scratchnet.study TOOL ...``: one subcommand per study, each calling that study's runner."""
import argparse
import sys
from pathlib import Path

from .. import backend
from ..data import DatasetError
from ..nn import StateDictError
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


def build_parser():
    p = argparse.ArgumentParser(prog="python -m scratchnet.study", description=DESCRIPTION)
    p.add_argument("--out", default="runs/study", help="folder for the PNGs and JSON (default runs/study)")
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
    s.add_argument("--hessian-iterations", type=int, default=10, help="power iterations, an exact Hessian-vector "
                   "product each (default 10)")
    s.add_argument("--hessian-step", type=float, default=1e-3, help="finite-difference step along the top "
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
        s = sub.add_parser(name, help=help_text)
        s.add_argument("--model", default="se_resnet20" if name == "se" else "lenet")
        s.add_argument("--weights", help="DEFAULT (or a torchvision weight name): ImageNet's pretrained weights, "
                                         "studied on the sample photographs; or a weights file (.npz from "
                                         "scratchnet.train, .safetensors, .pth); else train briefly")
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

    f = sub.add_parser("deformable", help="regular vs deformable nets on scaled, rotated, shifted Fashion-MNIST, "
                       "and where the deformable kernels sample (Dai et al. 2017, Zhu et al. 2019)")
    f.add_argument("--seeds", type=int, default=3, help="runs of each net, seeds SEED, SEED+1, ... (default 3)")
    f.add_argument("--steps", type=int, default=300, help="SGD steps per run (default 300)")
    f.add_argument("--batch-size", type=int, default=64)
    f.add_argument("--lr", type=float, default=0.05, help="learning rate, cosine decay, momentum 0.9 (default 0.05)")
    f.add_argument("--train-images", type=int, default=19200, help="transformed training images per seed")
    f.add_argument("--test-images", type=int, default=2000, help="transformed test images (one fixed set)")
    f.add_argument("--stats-images", type=int, default=500, help="test images the offset statistics use")
    f.add_argument("--canvas", type=int, default=36, help="image side, a multiple of 4 (default 36)")
    f.add_argument("--version", choices=["v1", "v2"], default="v1", help="DCN v1 (offsets) or v2 (and modulation)")
    f.add_argument("--offset-lr-mult", type=float, help="the offset branches' learning rate multiplier (default: "
                   "the papers' 1 for v1, 0.1 for v2)")
    f.set_defaults(run=lambda a, common: deformable(a.seeds, a.steps, a.batch_size, a.lr, a.train_images,
                                                    a.test_images, a.stats_images, a.canvas, a.version,
                                                    a.offset_lr_mult, **common))

    c = sub.add_parser("cost", help="parameters vs multiply-adds for the zoo")
    c.add_argument("--models", nargs="*")
    c.set_defaults(run=lambda a, common: cost(a.models, common["out"]))
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    try:
        if args.threads is not None:
            backend.set_num_threads(args.threads)
        args.run(args, dict(data_dir=args.data_dir, out=out, seed=args.seed))
    except (DatasetError, ValueError, backend.DeviceError, FileNotFoundError, StateDictError) as exc:
        print(f"study {args.tool}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}/")
    return 0

