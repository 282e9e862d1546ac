"""AlexNet Sec. 3.1, Fig. 1: deep nets with ReLUs train several times faster than with tanh units."""
from ...nn import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, Tanh
from .core import NOT_SUPPORTED, SUPPORTED, Claim, Outcome, better_everywhere, spread
from .training import built, data_for, fit, plot_curves, run_arms, steps_to, summarise

THRESHOLD = 0.25  # Fig. 1: the training error both nets are timed to


def four_layer_cnn(activation, in_channels):
    """Fig. 1's "four-layer convolutional neural network": three conv layers (each followed by the activation
    and a 3x3/2 max pool) and a linear classifier, on 32x32 images."""
    act = ReLU if activation == "ReLU" else Tanh
    return Sequential(
        Conv2d(in_channels, 16, 5, padding=2), act(), MaxPool2d(3, 2),  # 32 -> 15
        Conv2d(16, 32, 5, padding=2), act(), MaxPool2d(3, 2),  # 15 -> 7
        Conv2d(32, 32, 3, padding=1), act(), MaxPool2d(3, 2),  # 7 -> 3
        Flatten(), Linear(32 * 3 * 3, 10))


def measure(context):
    budget, data = context.budget, data_for(context)

    def train(arm, options, seed):
        model = built(lambda: four_layer_cnn(arm, data.channels), seed)
        curve = fit(model, data, budget["steps"], budget["batch_size"], budget["lr"], seed,
                    log_every=budget["log_every"])
        reached = steps_to(curve, THRESHOLD)
        return dict(curve=curve, steps=float(reached if reached is not None else budget["steps"]),
                    reached=reached is not None, final_error=float(curve["error"][-1]) if curve["error"] else 1.0)

    runs = run_arms({"ReLU": {}, "tanh": {}}, context.seeds, train)
    steps = {arm: [r["steps"] for r in arm_runs] for arm, arm_runs in runs.items()}
    reached = {arm: sum(r["reached"] for r in arm_runs) for arm, arm_runs in runs.items()}
    holds, detail = better_everywhere(steps["ReLU"], steps["tanh"])
    ratios = [t / r for r, t in zip(steps["ReLU"], steps["tanh"])]
    censored = "" if all(reached[a] == len(context.seeds) for a in reached) else (
        f" (reached by ReLU in {reached['ReLU']}, tanh in {reached['tanh']} of {len(context.seeds)} seeds; "
        f"the others counted at the budget's {budget['steps']} steps)")
    measured = (f"steps to {THRESHOLD:.0%} training error: ReLU {spread(steps['ReLU'], 1, 0)}, tanh "
                f"{spread(steps['tanh'], 1, 0)}; tanh/ReLU {spread(ratios, 1, 2)}{censored}")
    return Outcome(measured=measured, verdict=SUPPORTED if holds else NOT_SUPPORTED,
                   rows=summarise(runs, ["steps", "final_error"]),
                   figure=plot_curves(runs, context, "ReLU vs tanh: training error (AlexNet Fig. 1)"), notes=detail)


CLAIM = Claim(
    name="relu_vs_tanh",
    statement="A four-layer convolutional network with ReLUs reaches 25% training error six times faster than an "
              "equivalent network with tanh neurons.",
    source="Krizhevsky et al. 2012, ImageNet Classification with Deep CNNs, Sec. 3.1 and Fig. 1",
    kind="training",
    experiment="The same four-layer CNN (conv 5x5 16, conv 5x5 32, conv 3x3 32, each with 3x3/2 max pooling, and a "
               "linear classifier), ReLU or tanh after every conv, torch's default initialisation, SGD with momentum "
               "0.9 at one learning rate for both, no regularisation (as Fig. 1); the training error is the mean over "
               "each window of minibatches, and a run is timed to the first window at or below 25%.",
    expected="ReLU reaches 25% training error in fewer steps (paper: 6x fewer)",
    rule="supported when ReLU needs fewer steps than tanh in every seed and the difference of the means exceeds the "
         "larger sd; a run that never reaches 25% counts the whole budget",
    measure=measure,
    budgets={"tiny": dict(steps=4, batch_size=16, lr=0.01, train_images=128, test_images=64, log_every=2),
             "quick": dict(steps=300, batch_size=64, lr=0.01, train_images=20000, test_images=1000, log_every=10),
             "full": dict(steps=1500, batch_size=64, lr=0.01, train_images=60000, test_images=10000, log_every=10)},
)
