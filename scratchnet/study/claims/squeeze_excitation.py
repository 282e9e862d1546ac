"""SENet: a squeeze-and-excitation block improves a network at little extra cost."""
from functools import partial

from ...models import get_model
from ...models.senet import SEBlock
from .core import Claim
from .training import built, comparison, data_for, evaluate, fit, resized, run_arms


def build(channels, budget, se):
    se_layer = partial(SEBlock, reduction=budget["reduction"]) if se else None
    return get_model(f"resnet{budget['depth']}", in_channels=channels, widths=budget["widths"], se_layer=se_layer)


def measure(context):
    budget, data = context.budget, data_for(context)
    prepare = resized(budget["side"])

    def train(arm, options, seed):
        model = built(lambda: build(data.channels, budget, options["se"]), seed)
        curve = fit(model, data, budget["steps"], budget["batch_size"], budget["lr"], seed, weight_decay=1e-4,
                    prepare=prepare, log_every=budget["log_every"])
        test = evaluate(model, data.test_x, data.test_y, prepare=prepare)
        return dict(curve=curve, test_error=test["error"], test_loss=test["loss"],
                    parameters=float(model.num_parameters()))

    runs = run_arms({"SE": dict(se=True), "no SE": dict(se=False)}, context.seeds, train)
    extra = runs["SE"][0]["parameters"] / runs["no SE"][0]["parameters"] - 1
    return comparison(context, runs, "test_error", "SE", "no SE", "test error", ["test_error", "test_loss"],
                      f"ResNet-{budget['depth']} with and without SE blocks: training error",
                      extra=f"; SE adds {100 * extra:.1f}% parameters")


CLAIM = Claim(
    name="squeeze_excitation",
    statement="SE blocks bring improvements in performance for existing state-of-the-art CNNs at slight additional "
              "computational cost: SE-ResNet-50 has the accuracy of ResNet-101 for ~10% more parameters and 0.26% "
              "more FLOPs.",
    source="Hu et al. 2018, Squeeze-and-Excitation Networks, Sec. 4 and Table 2",
    kind="training",
    experiment="The CIFAR ResNet of the budget's depth and narrow widths with and without an SE block at the end of "
               "every residual branch (the zoo's SEBlock; reduction in the budget, so the narrow stages squeeze to "
               "1, 2 and 4 units as se_resnet20's do at r=16), same initialisation seed and batches, SGD (lr 0.1, "
               "momentum 0.9, weight decay 1e-4); top-1 test error.",
    expected="a lower test error with SE at equal depth",
    rule="supported when the SE net has the lower test error in every seed and the difference of the means exceeds "
         "the larger sd",
    measure=measure,
    budgets={"tiny": dict(steps=3, batch_size=16, lr=0.1, train_images=64, test_images=32, side=16, depth=20,
                          widths=(4, 8, 8), reduction=4, log_every=1),
             "quick": dict(steps=150, batch_size=128, lr=0.1, train_images=19200, test_images=1000, side=16,
                           depth=20, widths=(8, 16, 32), reduction=8, log_every=10),
             "full": dict(steps=2000, batch_size=128, lr=0.1, train_images=60000, test_images=10000, side=32,
                          depth=20, widths=(16, 32, 64), reduction=16, log_every=20)},
)
