"""Study tools: instruments for *why* these architectures work, each ending in a picture and a table.

    python -m scratchnet.study gradflow plain34 resnet34      # per-layer gradient norms, init and after N steps
    python -m scratchnet.study gradflow deep_sigmoid deep_relu  # the vanishing-gradient story
    python -m scratchnet.study joins resnet20 googlenet densenet121  # gradient at residual / concat joins
    python -m scratchnet.study degradation                    # plain20/56 vs resnet20/56 training error (Fig. 6)
    python -m scratchnet.study deconv --model lenet           # ZFNet's DeconvNet projections
    python -m scratchnet.study features --model lenet         # first-layer filters and feature maps
    python -m scratchnet.study se --model se_resnet20        # SE channel weights per class
    python -m scratchnet.study cost                           # parameters vs multiply-adds for the zoo
    python -m scratchnet.study landscape plain20 resnet20     # loss landscape and sharpness (Li et al. 2018)
    python -m scratchnet.study deformable                     # regular vs deformable nets, where the kernels look
    python -m scratchnet.study claims [NAME ...] [--quick]    # the study notes' claims, each checked (docs/claims.md)

Every command writes PNGs and a JSON of the numbers to ``--out`` (default
``runs/study``) and prints a short table. Gradients are read with tensor hooks,
module forward hooks and function hooks (``sn.FunctionHook``), so no model
code changes to be studied. Data is real: Fashion-MNIST (resized and
channel-repeated to the model's input), found as the training CLI finds it.

One module per study, each in the same three parts: ``measure(...)`` computes
and returns plain data, ``plot(data)`` returns a matplotlib figure, and the
runner named after the study (``gradflow``, ``joins``, ...) does both, writes
the files and prints the table. ``common`` holds what they share, ``cli`` the
command line. This file only re-exports: ``study.gradflow`` is the runner
function; import a module's other pieces with ``from scratchnet.study.gradflow
import measure``.
"""
from .claims import claims
from .cli import build_parser, main
from .common import build, classification_loss, deep_net, fashion_batches, load_or_train, train_briefly
from .cost import cost
from .deconv import deconv, deconv_project, feature_stack, max_pool_with_switches, max_unpool
from .deformable import deformable
from .degradation import degradation
from .features import features
from .gradflow import gradflow, gradient_norms
from .joins import join_gradients, joins
from .landscape import landscape
from .se_weights import se_weights

__all__ = ["build", "build_parser", "claims", "classification_loss", "cost", "deconv", "deconv_project", "deep_net",
           "deformable", "degradation", "fashion_batches", "feature_stack", "features", "gradflow", "gradient_norms",
           "join_gradients", "joins", "landscape", "load_or_train", "main", "max_pool_with_switches", "max_unpool",
           "se_weights", "train_briefly"]
