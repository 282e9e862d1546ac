"""LeNet-5's Euclidean RBF output against the softmax cross-entropy output that replaced it."""
from ...models import get_model, get_recipe
from .core import Claim
from .training import built, comparison, data_for, evaluate, fit, run_arms


def measure(context):
    budget, data = context.budget, data_for(context)
    if data.channels != 1:  # the RBF codes are digits; LeNet-5 reads one channel
        data = type(data)(data.name, data.train_x.mean(1, keepdims=True), data.train_y,
                          data.test_x.mean(1, keepdims=True), data.test_y)

    def train(arm, options, seed):
        model = built(lambda: get_model("lenet5_classic", output=options["output"]), seed)
        curve = fit(model, data, budget["steps"], budget["batch_size"], options["lr"], seed, weight_decay=5e-4)
        test = evaluate(model, data.test_x, data.test_y)
        return dict(curve=curve, test_error=test["error"])

    # each head at its own recipe's rate: the RBF's gradient 2(x - w_i) wants a 10x smaller one (docs/models.md)
    arms = {"softmax (linear + CE)": dict(output="linear", lr=get_recipe("lenet5").lr),
            "RBF (Eq. 9)": dict(output="rbf", lr=get_recipe("lenet5_classic").lr)}
    runs = run_arms(arms, context.seeds, train)
    return comparison(context, runs, "test_error", "softmax (linear + CE)", "RBF (Eq. 9)", "test error",
                      ["test_error"], "LeNet-5 (1998 body): RBF output vs softmax output")


CLAIM = Claim(
    name="lenet_rbf_output",
    statement="LeNet-5's output layer of Euclidean RBF units with fixed +-1 codes, trained with the discriminative "
              "criterion of Eq. (9), is replaced in modern LeNets by a linear layer with softmax cross-entropy, "
              "which classifies better.",
    source="LeCun et al. 1998, Gradient-Based Learning Applied to Document Recognition, Sec. II.B-C and Eq. (9); "
           "the study notes",
    kind="training",
    experiment="The 1998 LeNet-5 (trainable subsampling, Table I's C3, scaled tanh, the paper's initialisation) with "
               "its RBF output (lenet5_classic) or a linear 84 -> 10 output trained with cross-entropy "
               "(output='linear'), each at its recipe's learning rate (0.005 for the RBF, 0.05 for softmax), SGD "
               "with momentum 0.9 on the same batches; top-1 test error.",
    expected="a lower test error with the softmax output",
    rule="supported when the softmax head has the lower test error in every seed and the difference of the means "
         "exceeds the larger sd",
    measure=measure,
    budgets={"tiny": dict(steps=4, batch_size=16, train_images=64, test_images=64),
             "quick": dict(steps=600, batch_size=64, train_images=38400, test_images=2000),
             "full": dict(steps=5000, batch_size=64, train_images=60000, test_images=10000)},
)
