"""A model's training recipe (declared beside the model, ``register_model(..., recipe=...)``) and the
optimizer and learning-rate schedule a run's configuration makes of it."""
from dataclasses import asdict

from ..models import get_recipe, list_models
from ..optim import SGD, Adam, AdamW, lr_scheduler
from .errors import UsageError

RECIPE_KEYS = ("dataset", "epochs", "batch_size", "lr", "momentum", "weight_decay", "optimizer", "schedule",
               "warmup", "augment")


def recipe_for(model):
    """The ``Recipe`` registered with ``model`` (a zoo name or alias, any case)."""
    try:
        return get_recipe(model)
    except ValueError as exc:
        raise UsageError(f"cannot build model {model!r}: {exc}") from None


def recipe_name(model):
    """The label of ``model``'s recipe, e.g. "cifar" for resnet20 and plain110."""
    return recipe_for(model).name


def _recipes():
    """Every registered recipe by name, as the dict of settings a run starts from."""
    recipes = {}
    for model in list_models():
        recipe = get_recipe(model)
        recipes[recipe.name] = {key: value for key, value in asdict(recipe).items() if key in RECIPE_KEYS}
    return recipes


RECIPES = _recipes()


def make_optimizer(config, model):
    params = list(model.parameters())
    kind = config["optimizer"]
    if kind == "sgd":
        return SGD(params, lr=config["lr"], momentum=config["momentum"], weight_decay=config["weight_decay"])
    cls = Adam if kind == "adam" else AdamW
    return cls(params, lr=config["lr"], weight_decay=config["weight_decay"])


def make_scheduler(config, optimizer, steps_per_epoch):
    """Stepped once per batch: milestones and periods are counted in optimizer steps."""
    total = config["epochs"] * steps_per_epoch
    warm = min(int(round(config["warmup"] * steps_per_epoch)), max(total - 1, 0))
    kind = config["schedule"]
    if kind == "step":  # divide by 10 at 50% and 75% of training (He et al.'s 32k and 48k of 64k)
        main = lr_scheduler.MultiStepLR(optimizer, [int(total * 0.5), int(total * 0.75)], gamma=0.1)
    elif kind == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warm, 1))
    else:
        main = None
    if warm == 0:
        return main
    if main is None:
        return lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warm)
    return lr_scheduler.with_warmup(main, warm, start_factor=0.1)
