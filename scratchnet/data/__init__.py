"""scratchnet.data: datasets (MNIST, Fashion-MNIST, CIFAR-10, synthetic shapes), DataLoader, transforms."""
from . import transforms
from .cifar import load_cifar10
from .detection import SyntheticShapes
from .download import DatasetError, fetch_file, verify
from .idx import load_mnist, parse_idx, read_idx
from .loader import ArrayDataset, DataLoader

__all__ = ["ArrayDataset", "DataLoader", "DatasetError", "SyntheticShapes", "fetch_file",
           "load_cifar10", "load_mnist", "parse_idx", "read_idx", "transforms", "verify"]
