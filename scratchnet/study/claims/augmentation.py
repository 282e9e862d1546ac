"""AlexNet Sec. 4.1: random patches and their mirror images (and a ten-patch test) reduce overfitting."""
from ...data import transforms as T
from .core import Claim
from .training import built, cifar_alexnet, comparison, data_for, evaluate, fit, run_arms

SIDE, RESCALED = 32, 37  # AlexNet's 224 patches of 256 images, at this scale: 32 of 37 (32 x 256/224)


def measure(context):
    budget, data = context.budget, data_for(context)
    rescale, crop, flip = T.Resize(RESCALED), T.RandomCrop(SIDE), T.RandomHorizontalFlip()
    centre, ten = T.CenterCrop(SIDE), T.TenCrop(SIDE)

    def patches(x, rng):
        return flip(crop(rescale(x), rng), rng)

    def middle(x):
        return centre(rescale(x))

    def train(arm, options, seed):
        model = built(lambda: cifar_alexnet(data.channels, image_size=SIDE), seed)
        augment = dict(augment=patches) if options["augment"] else dict(prepare=middle)
        curve = fit(model, data, budget["steps"], budget["batch_size"], budget["lr"], seed, weight_decay=5e-4,
                    **augment)
        test = evaluate(model, data.test_x, data.test_y, prepare=middle)
        ten_crop = evaluate(model, data.test_x, data.test_y, crops=lambda x: ten(rescale(x)))
        seen = evaluate(model, data.train_x, data.train_y, prepare=middle)
        return dict(curve=curve, test_error=test["error"], ten_crop_error=ten_crop["error"], train_error=seen["error"],
                    gap=test["loss"] - seen["loss"])

    runs = run_arms({"patches + flips": dict(augment=True), "centre only": dict(augment=False)}, context.seeds, train)
    return comparison(context, runs, "test_error", "patches + flips", "centre only", "test error (centre patch)",
                      ["test_error", "ten_crop_error", "train_error", "gap"],
                      "Random patches and flips on a small training set: training error")


CLAIM = Claim(
    name="augmentation",
    statement="Extracting random patches (and their horizontal reflections) from the training images enlarges the "
              "training set; without this scheme the network suffers from substantial overfitting, and at test "
              "time averaging the softmax over ten patches (corners, centre, mirrored) helps further.",
    source="Krizhevsky et al. 2012, Sec. 4.1",
    kind="training",
    experiment=f"The CIFAR-sized AlexNet of the lrn claim, trained on a small training set whose 32x32 images are "
               f"rescaled to {RESCALED}x{RESCALED} (AlexNet's 256/224): random {SIDE}x{SIDE} patches with random "
               f"mirroring, or the centre patch only; top-1 test error on the centre patch and with the ten-patch "
               f"test (transforms.TenCrop, torchvision's crops); the gap between test and training loss.",
    expected="a lower test error with the augmentation (and lower still with ten patches)",
    rule="supported when the augmented net has the lower centre-patch test error in every seed and the difference "
         "of the means exceeds the larger sd",
    measure=measure,
    budgets={"tiny": dict(steps=4, batch_size=16, lr=0.02, train_images=48, test_images=32),
             "quick": dict(steps=300, batch_size=64, lr=0.02, train_images=2000, test_images=2000),
             "full": dict(steps=3000, batch_size=64, lr=0.02, train_images=5000, test_images=10000)},
)
