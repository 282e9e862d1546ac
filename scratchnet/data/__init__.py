"""scratchnet.data: datasets (MNIST, Fashion-MNIST, CIFAR-10, synthetic shapes), DataLoader, transforms, ImageNet's
class names and photographs."""
from . import transforms
from .cifar import load_cifar10
from .detection import SyntheticShapes
from .download import DatasetError, fetch_file, verify
from .idx import load_mnist, parse_idx, read_idx
from .imagenet import imagenet_classes, read_image, sample_images
from .loader import ArrayDataset, DataLoader

__all__ = ["ArrayDataset", "DataLoader", "DatasetError", "SyntheticShapes", "fetch_file",
           "imagenet_classes", "load_cifar10", "load_mnist", "parse_idx", "read_idx", "read_image", "sample_images",
           "transforms", "verify"]
