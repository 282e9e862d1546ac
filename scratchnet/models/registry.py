"""The model registry: ``get_model(name, num_classes=..., **options)`` and ``list_models()``.

Each family file decorates its constructors with ``@register_model("name", ...)``.
"""
_MODELS = {}
_ALIASES = {}


def register_model(name, *aliases):
    """Register a constructor under a torchvision-style name (plus aliases)."""
    def decorate(constructor):
        if name in _MODELS or name in _ALIASES:
            raise ValueError(f"model name {name!r} registered twice")
        _MODELS[name] = constructor
        for alias in aliases:
            _ALIASES[alias] = name
        return constructor
    return decorate


def list_models():
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def get_model(name, **options):
    """Build a model by name, e.g. ``get_model("resnet50", num_classes=10)``."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[key](**options)
