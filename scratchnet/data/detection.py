"""A synthetic detection set for YOLO: coloured shapes on a noisy background, with boxes and classes.

Real VOC is 2 GB and not on these machines; a detector still needs something
whose answer is known. Each image holds 1..``max_objects`` shapes (rectangle,
ellipse, triangle) in one of a few colours; the class is (shape, colour). The
targets are VOC-style: per image a dict with ``boxes`` (K, 4) as pixel
``[xmin, ymin, xmax, ymax]`` and ``labels`` (K,). Image ``i`` is drawn from
``rng(seed, i)``, so the set is the same on every machine and needs no storage.
"""
import numpy as np

SHAPES = ("rectangle", "ellipse", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}


class SyntheticShapes:
    """``n`` images of ``image_size`` pixels; ``get_batch(indices)`` -> (uint8 (N, 3, H, W), list of targets)."""

    def __init__(self, n=1000, image_size=448, seed=0, max_objects=3, colours=("red", "green", "blue"),
                 min_size=0.15, max_size=0.5, name="shapes"):
        if not 0 < min_size <= max_size <= 1:
            raise ValueError(f"SyntheticShapes: need 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")
        self.n, self.image_size, self.seed = int(n), int(image_size), int(seed)
        self.max_objects, self.min_size, self.max_size = int(max_objects), min_size, max_size
        self.colours = list(colours)
        self.classes = [f"{c} {s}" for s in SHAPES for c in self.colours]
        self.name = name

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if not 0 <= index < self.n:
            raise IndexError(f"SyntheticShapes: index {index} out of range for {self.n} images")
        return self._render(int(index))

    def get_batch(self, indices):
        samples = [self._render(int(i)) for i in indices]  # one image at a time: each has its own shapes
        return np.stack([s[0] for s in samples]), [s[1] for s in samples]

    def subset(self, n):
        return SyntheticShapes(min(n, self.n), self.image_size, self.seed, self.max_objects, self.colours,
                               self.min_size, self.max_size, self.name)

    def _render(self, index):
        size = self.image_size
        rng = np.random.default_rng((self.seed, index))
        image = (rng.integers(0, 40, size=(3, 1, 1)) + rng.integers(0, 30, size=(3, size, size))).astype(np.uint8)
        boxes, labels = [], []
        for _ in range(rng.integers(1, self.max_objects + 1)):
            for _attempt in range(10):  # keep objects mostly apart, as a detector's cell grid expects
                w, h = (rng.uniform(self.min_size, self.max_size, size=2) * size).astype(int)
                x0, y0 = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
                box = np.array([x0, y0, x0 + w, y0 + h], dtype=np.float32)
                if all(_iou(box, other) < 0.3 for other in boxes):
                    break
            else:
                continue
            shape, colour = rng.integers(len(SHAPES)), rng.integers(len(self.colours))
            _draw(image, SHAPES[shape], box, COLOURS[self.colours[colour]])
            boxes.append(box)
            labels.append(shape * len(self.colours) + colour)
        target = {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
                  "labels": np.array(labels, dtype=np.int64)}
        return image, target


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _draw(image, shape, box, rgb):
    """Fill a shape inscribed in ``box`` (only the box's pixels are looked at)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if shape == "rectangle":
        mask = np.ones(yy.shape, dtype=bool)
    elif shape == "ellipse":
        mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    else:  # triangle: apex at the top centre, base along the bottom edge
        mask = np.abs(xx - cx) <= (yy - y0) / (y1 - y0) * rx
    region = image[:, y0:y1, x0:x1]
    region[:, mask] = np.asarray(rgb, dtype=np.uint8)[:, None]
