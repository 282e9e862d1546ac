"""ResNet Sec. 4.1: a deeper plain net trains worse than a shallower one; its residual twin does not."""
import numpy as np

from ..degradation import train_for_degradation
from .core import NOT_SUPPORTED, SUPPORTED, Claim, Outcome, better_everywhere, spread
from .training import data_for, plot_curves, resized, run_arms, summarise

SHALLOW, DEEP = 20, 56


def measure(context):
    budget, data = context.budget, data_for(context)
    prepare = resized(budget["side"])
    images, test_images = prepare(data.train_x), prepare(data.test_x)
    per_epoch = len(images) // budget["batch_size"]

    def train(arm, options, seed):
        # the degradation study's own training (study/degradation.py): SGD 0.1, momentum 0.9, weight decay 1e-4
        curve, _ = train_for_degradation(arm, images, data.train_y, test_images, data.test_y,
                                         budget["steps"] / per_epoch, budget["batch_size"], budget["lr"],
                                         budget["log_every"], seed, model_options=dict(widths=budget["widths"]))
        windows = curve["train_error"][-3:]
        return dict(curve={"step": curve["iteration"], "error": curve["train_error"], "loss": curve["loss"]},
                    final_train_error=float(np.mean(windows)), test_error=float(curve["test_error"][-1]))

    arms = {f"plain{SHALLOW}": {}, f"plain{DEEP}": {}, f"resnet{DEEP}": {}}
    runs = run_arms(arms, context.seeds, train)
    error = {arm: [r["final_train_error"] for r in arm_runs] for arm, arm_runs in runs.items()}
    degrades, detail_plain = better_everywhere(error[f"plain{SHALLOW}"], error[f"plain{DEEP}"])
    residual_fixes, detail_residual = better_everywhere(error[f"resnet{DEEP}"], error[f"plain{DEEP}"])
    measured = "final training error: " + ", ".join(f"{arm} {spread(v, 100, unit='%')}" for arm, v in error.items())
    return Outcome(measured=measured, verdict=SUPPORTED if degrades and residual_fixes else NOT_SUPPORTED,
                   rows=summarise(runs, ["final_train_error", "test_error"]),
                   figure=plot_curves(runs, context, f"Degradation: plain{SHALLOW}/{DEEP} vs resnet{DEEP} "
                                                     f"(widths {budget['widths']}, {budget['side']}px)"),
                   notes=f"plain{DEEP} worse than plain{SHALLOW}: {'yes' if degrades else 'no'} ({detail_plain}); "
                         f"resnet{DEEP} better than plain{DEEP}: {'yes' if residual_fixes else 'no'} "
                         f"({detail_residual})")


CLAIM = Claim(
    name="degradation",
    statement="With the network depth increasing, accuracy gets saturated and then degrades: the deeper plain net "
              "has higher training error (it is not overfitting), while the residual net of the same depth does not "
              "suffer from it.",
    source="He et al. 2016, Deep Residual Learning, Sec. 4.1-4.2 and Fig. 6",
    kind="training",
    experiment=f"plain{SHALLOW}, plain{DEEP} and resnet{DEEP} (CIFAR nets, option A shortcuts) with narrow stages "
               f"(widths in the budget), trained by the degradation study's own loop (python -m scratchnet.study "
               f"degradation: SGD lr 0.1, momentum 0.9, weight decay 1e-4) on the same batches; the training error "
               f"over the last three logged windows.",
    expected=f"plain{DEEP} above plain{SHALLOW} in training error; resnet{DEEP} below plain{DEEP}",
    rule=f"supported when plain{SHALLOW} beats plain{DEEP} and resnet{DEEP} beats plain{DEEP} in final training error, "
         f"each in every seed with a difference of the means above the larger sd",
    measure=measure,
    budgets={"tiny": dict(steps=3, batch_size=16, lr=0.1, train_images=64, test_images=32, side=16,
                          widths=(2, 4, 4), log_every=1),
             "quick": dict(steps=100, batch_size=128, lr=0.1, train_images=12800, test_images=1000, side=16,
                           widths=(4, 8, 16), log_every=10),
             "full": dict(steps=2000, batch_size=128, lr=0.1, train_images=60000, test_images=10000, side=32,
                          widths=(16, 32, 64), log_every=20)},
)
