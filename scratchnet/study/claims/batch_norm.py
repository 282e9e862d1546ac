"""Batch normalization (VGG vs VGG-BN): normalizing each layer's inputs lets a deep net train faster."""
import numpy as np

from ...models import get_model
from .core import Claim
from .training import built, comparison, data_for, evaluate, fit, run_arms


def measure(context):
    budget, data = context.budget, data_for(context)

    def train(arm, options, seed):
        model = built(lambda: get_model(options["name"], num_classes=10, in_channels=data.channels,
                                        width=budget["width"], hidden=budget["hidden"]), seed)
        curve = fit(model, data, budget["steps"], budget["batch_size"], budget["lr"], seed, weight_decay=5e-4,
                    log_every=budget["log_every"])
        test = evaluate(model, data.test_x, data.test_y)
        return dict(curve=curve, final_train_error=float(np.mean(curve["error"][-3:])), test_error=test["error"])

    depth = budget["depth"]
    runs = run_arms({f"vgg{depth}_bn": dict(name=f"vgg{depth}_bn"), f"vgg{depth}": dict(name=f"vgg{depth}")},
                    context.seeds, train)
    return comparison(context, runs, "final_train_error", f"vgg{depth}_bn", f"vgg{depth}", "final training error",
                      ["final_train_error", "test_error"], f"VGG-{depth} with and without batch norm: training error")


CLAIM = Claim(
    name="batch_norm",
    statement="Batch normalization reduces internal covariate shift and dramatically accelerates the training of "
              "deep nets: with it the same network reaches a given accuracy in far fewer steps (BN-Inception matched "
              "Inception's accuracy in 14 times fewer).",
    source="Ioffe & Szegedy 2015, Batch Normalization, Sec. 4.2; the VGG-BN variants of torchvision",
    kind="training",
    experiment="The zoo's VGG of the budget's depth (Table 1 configuration) scaled to narrow widths with a small "
               "classifier, with and without BatchNorm after each conv (vgg*_bn), torchvision's initialisation, SGD "
               "(momentum 0.9, weight decay 5e-4) at VGG's learning rate 0.01 for both, on the same batches; the "
               "training error over the last three logged windows, and the test error.",
    expected="a lower training error after the same number of steps with batch norm",
    rule="supported when the BN net has the lower final training error in every seed and the difference of the "
         "means exceeds the larger sd",
    measure=measure,
    budgets={"tiny": dict(steps=3, batch_size=16, lr=0.01, train_images=64, test_images=32, depth=11, width=1 / 32,
                          hidden=16, log_every=1),
             "quick": dict(steps=300, batch_size=64, lr=0.01, train_images=20000, test_images=1000, depth=16,
                           width=1 / 16, hidden=64, log_every=10),
             "full": dict(steps=3000, batch_size=64, lr=0.01, train_images=60000, test_images=10000, depth=16,
                          width=1 / 8, hidden=256, log_every=20)},
)
