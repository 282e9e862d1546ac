"""AlexNet Sec. 3.3: local response normalisation lowers the error."""
from .core import Claim
from .training import CIFAR_ALEXNET, built, cifar_alexnet, comparison, data_for, evaluate, fit, run_arms


def measure(context):
    budget, data = context.budget, data_for(context)

    def train(arm, options, seed):
        model = built(lambda: cifar_alexnet(data.channels, **options), seed)
        curve = fit(model, data, budget["steps"], budget["batch_size"], budget["lr"], seed, weight_decay=5e-4)
        test = evaluate(model, data.test_x, data.test_y)
        return dict(curve=curve, test_error=test["error"], test_loss=test["loss"])

    runs = run_arms({"LRN": dict(lrn=True), "no LRN": dict(lrn=False)}, context.seeds, train)
    return comparison(context, runs, "test_error", "LRN", "no LRN", "test error",
                      ["test_error", "test_loss"], "AlexNet-style net with and without LRN: training error")


CLAIM = Claim(
    name="lrn",
    statement="Response normalization reduces the top-1 and top-5 error rates by 1.4% and 1.2%; on CIFAR-10 a "
              "four-layer CNN reached 13% test error without normalization and 11% with it.",
    source="Krizhevsky et al. 2012, Sec. 3.3",
    kind="training",
    experiment="A CIFAR-sized AlexNet built by the zoo's AlexNet class (layer table "
               f"{[row[:4] for row in CIFAR_ALEXNET]}, (maps, kernel, stride, padding); LRN n=5, k=2, alpha=1e-4, "
               "beta=0.75 after conv1 and conv2, overlapping 3x3/2 pools, FC 128-128 with dropout 0.5, He "
               "initialisation), with lrn=True or lrn=False, trained with SGD (momentum 0.9, weight decay 5e-4) on "
               "the same batches; top-1 error on the test images.",
    expected="a lower test error with LRN (paper: -1.4% top-1 on ImageNet, -2% on CIFAR-10)",
    rule="supported when the net with LRN has the lower test error in every seed and the difference of the means "
         "exceeds the larger sd",
    measure=measure,
    budgets={"tiny": dict(steps=3, batch_size=16, lr=0.02, train_images=96, test_images=64),
             "quick": dict(steps=300, batch_size=64, lr=0.02, train_images=20000, test_images=2000),
             "full": dict(steps=3000, batch_size=64, lr=0.02, train_images=60000, test_images=10000)},
)
