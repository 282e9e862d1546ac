"""He et al. 2016 (Identity Mappings): pre-activation residual units train more easily than post-activation ones."""
import numpy as np

from ...models import get_model
from .core import Claim
from .training import built, comparison, data_for, evaluate, fit, resized, run_arms


def measure(context):
    budget, data = context.budget, data_for(context)
    prepare = resized(budget["side"])
    depth = budget["depth"]

    def train(arm, options, seed):
        model = built(lambda: get_model(options["name"], in_channels=data.channels, widths=budget["widths"]), seed)
        curve = fit(model, data, budget["steps"], budget["batch_size"], budget["lr"], seed, weight_decay=1e-4,
                    prepare=prepare, log_every=budget["log_every"])
        test = evaluate(model, data.test_x, data.test_y, prepare=prepare)
        return dict(curve=curve, final_train_loss=float(np.mean(curve["loss"][-3:])),
                    final_train_error=float(np.mean(curve["error"][-3:])), test_error=test["error"])

    runs = run_arms({f"pre-activation {depth}": dict(name=f"preact_resnet{depth}"),
                     f"post-activation {depth}": dict(name=f"resnet{depth}")}, context.seeds, train)
    return comparison(context, runs, "final_train_loss", f"pre-activation {depth}", f"post-activation {depth}",
                      "final training loss", ["final_train_loss", "final_train_error", "test_error"],
                      f"Pre- vs post-activation ResNet-{depth}: training error", scale=1.0, unit="")


CLAIM = Claim(
    name="preactivation",
    statement="Full pre-activation units (BN and ReLU before each weight layer, nothing after the addition) ease "
              "optimization and reduce overfitting: they train to a lower loss than the original units, the more "
              "so the deeper the net, and lower the CIFAR-10 error of ResNet-110 from 6.61% to 6.37%.",
    source="He et al. 2016, Identity Mappings in Deep Residual Networks, Sec. 4-5, Table 3 and Fig. 6",
    kind="training",
    experiment="preact_resnet and resnet of the same depth and narrow widths (budget), option A shortcuts, the same "
               "initialisation rule, SGD (lr 0.1, momentum 0.9, weight decay 1e-4) on the same batches, images "
               "resized to the budget's side; the mean training loss over the last three logged windows, and the "
               "test error.",
    expected="a lower training loss (and test error) with pre-activation",
    rule="supported when the pre-activation net has the lower final training loss in every seed and the difference "
         "of the means exceeds the larger sd",
    measure=measure,
    budgets={"tiny": dict(steps=3, batch_size=16, lr=0.1, train_images=64, test_images=32, side=16,
                          widths=(2, 4, 4), depth=20, log_every=1),
             "quick": dict(steps=100, batch_size=128, lr=0.1, train_images=12800, test_images=1000, side=16,
                           widths=(4, 8, 16), depth=56, log_every=10),
             "full": dict(steps=2000, batch_size=128, lr=0.1, train_images=60000, test_images=10000, side=32,
                          widths=(16, 32, 64), depth=110, log_every=20)},
)
