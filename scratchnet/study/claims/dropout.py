"""AlexNet Sec. 4.2: without dropout the network overfits substantially."""
from .core import Claim
from .training import built, cifar_alexnet, comparison, data_for, evaluate, fit, run_arms


def measure(context):
    budget, data = context.budget, data_for(context)

    def train(arm, options, seed):
        model = built(lambda: cifar_alexnet(data.channels, hidden=budget["hidden"], **options), seed)
        curve = fit(model, data, budget["steps"], budget["batch_size"], budget["lr"], seed)
        test, seen = evaluate(model, data.test_x, data.test_y), evaluate(model, data.train_x, data.train_y)
        return dict(curve=curve, gap=test["loss"] - seen["loss"], test_error=test["error"],
                    train_error=seen["error"], test_loss=test["loss"], train_loss=seen["loss"])

    runs = run_arms({"dropout 0.5": dict(dropout=0.5), "no dropout": dict(dropout=0.0)}, context.seeds, train)
    return comparison(context, runs, "gap", "dropout 0.5", "no dropout", "test loss - training loss",
                      ["gap", "test_error", "train_error", "test_loss", "train_loss"],
                      "Dropout on a small training set: training error", scale=1.0, unit="")


CLAIM = Claim(
    name="dropout",
    statement="Without dropout the network exhibits substantial overfitting; dropout on the first two "
              "fully-connected layers prevents it (and roughly doubles the iterations needed to converge).",
    source="Krizhevsky et al. 2012, Sec. 4.2",
    kind="training",
    experiment="The CIFAR-sized AlexNet of the lrn claim with wider FC layers (hidden units in the budget) and "
               "dropout 0.5 or 0 after them, trained for several epochs on a small training set with no weight "
               "decay; overfitting measured as the test loss minus the training loss (both in eval mode, on all "
               "the training images and the test images).",
    expected="a smaller gap between test and training loss with dropout",
    rule="supported when the net with dropout has the smaller gap in every seed and the difference of the means "
         "exceeds the larger sd",
    measure=measure,
    budgets={"tiny": dict(steps=4, batch_size=16, lr=0.02, train_images=48, test_images=64, hidden=64),
             "quick": dict(steps=300, batch_size=64, lr=0.02, train_images=2000, test_images=2000, hidden=512),
             "full": dict(steps=3000, batch_size=64, lr=0.02, train_images=5000, test_images=10000, hidden=1024)},
)
