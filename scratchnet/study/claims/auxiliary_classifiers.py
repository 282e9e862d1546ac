"""GoogLeNet Sec. 5: auxiliary classifiers on intermediate layers push gradient into the early layers and help."""
import numpy as np

from ... import backend
from ...autograd import Tensor
from ...models import get_model
from ...models.googlenet import AUX_LOSS_WEIGHT
from .core import NOT_SUPPORTED, SUPPORTED, Claim, Outcome, better_everywhere, spread
from .training import built, data_for, evaluate, fit, plot_curves, resized, run_arms, summarise

SIDE = 80  # the smallest input whose stage-4 maps the auxiliary heads' 5x5/3 pool accepts (5x5 -> 1x1)


def googlenet(channels, aux_logits):
    return get_model("googlenet", num_classes=10, in_channels=channels, width=1 / 16, image_size=SIDE,
                     aux_logits=aux_logits)


def conv1_gradient(model, x, y, with_aux):
    """|dL/dW| of the first conv for one batch, the loss with or without the auxiliary terms."""
    model.train()
    model.zero_grad()
    backend.manual_seed(0)  # the same dropout masks for both losses
    out = model(Tensor(x))
    loss = model.loss(out, Tensor(y)) if with_aux else model.loss(model.main_output(out), Tensor(y))
    loss.backward()
    return float(np.linalg.norm(backend.to_numpy(model.conv1.conv.weight.grad.data)))


def measure(context):
    budget, data = context.budget, data_for(context)
    prepare = resized(SIDE)
    first = (prepare(data.train_x[:budget["batch_size"]]), data.train_y[:budget["batch_size"]])

    def train(arm, options, seed):
        model = built(lambda: googlenet(data.channels, options["aux"]), seed)
        at_init = conv1_gradient(model, *first, with_aux=True) / conv1_gradient(model, *first, with_aux=False) \
            if options["aux"] else 1.0
        norms = []
        curve = fit(model, data, budget["steps"], budget["batch_size"], budget["lr"], seed, weight_decay=2e-4,
                    prepare=prepare, after_backward=lambda m, step: norms.append(float(np.linalg.norm(
                        backend.to_numpy(m.conv1.conv.weight.grad.data)))))
        test = evaluate(model, data.test_x, data.test_y, prepare=prepare)
        return dict(curve=curve, test_error=test["error"], init_gradient_ratio=at_init,
                    conv1_gradient=float(np.mean(norms)) if norms else float("nan"))

    runs = run_arms({"with aux heads": dict(aux=True), "without": dict(aux=False)}, context.seeds, train)
    ratio = [r["init_gradient_ratio"] for r in runs["with aux heads"]]
    errors = {arm: [r["test_error"] for r in arm_runs] for arm, arm_runs in runs.items()}
    gradient_holds = all(value > 1 for value in ratio)
    accuracy_holds, detail = better_everywhere(errors["with aux heads"], errors["without"])
    measured = (f"|dL/dW conv1| with / without the aux losses at init {spread(ratio, 1, 3)}; test error: "
                + ", ".join(f"{arm} {spread(v, 100, unit='%')}" for arm, v in errors.items()))
    parts = f"gradient: {'yes' if gradient_holds else 'no'}; accuracy: {'yes' if accuracy_holds else 'no'}"
    return Outcome(measured=measured, verdict=SUPPORTED if gradient_holds and accuracy_holds else NOT_SUPPORTED,
                   rows=summarise(runs, ["test_error", "conv1_gradient", "init_gradient_ratio"]),
                   figure=plot_curves(runs, context, "GoogLeNet (width 1/16) with and without auxiliary heads"),
                   notes=f"{parts}. Accuracy: {detail}")


CLAIM = Claim(
    name="auxiliary_classifiers",
    statement="Auxiliary classifiers on intermediate layers (4a and 4d, their losses weighted 0.3) increase the "
              "gradient signal that gets propagated back to the lower layers, provide regularization and improve "
              "the network's accuracy.",
    source="Szegedy et al. 2014, Going Deeper with Convolutions, Sec. 5",
    kind="training",
    experiment=f"googlenet(width=1/16, image_size={SIDE}) with and without its auxiliary heads (aux_logits), "
               f"images resized to {SIDE}x{SIDE}; at initialisation the norm of conv1's weight gradient with the "
               f"auxiliary losses (weight {AUX_LOSS_WEIGHT}) over the norm without them, on the same weights and "
               f"batch; then SGD (momentum 0.9) with the paper's loss and the top-1 test error of the main head.",
    expected="a larger gradient at conv1 with the auxiliary losses, and a lower test error with the heads",
    rule="supported when the gradient ratio exceeds 1 in every seed and the net with heads has the lower test error "
         "in every seed with a difference of the means above the larger sd",
    measure=measure,
    budgets={"tiny": dict(steps=2, batch_size=8, lr=0.01, train_images=32, test_images=16),
             "quick": dict(steps=120, batch_size=64, lr=0.01, train_images=10000, test_images=1000),
             "full": dict(steps=1500, batch_size=64, lr=0.01, train_images=60000, test_images=10000)},
)
