"""The README example (README.md, "A short example: a two-layer CNN learns one batch"): a two-layer CNN learns one fixed batch with SGD.

The code below is the example itself; the second test makes sure the doc shows exactly this code.
"""
import re
from pathlib import Path

import numpy as np

EXAMPLE = '''\
import numpy as np
import scratchnet as sn
from scratchnet import nn, optim
import scratchnet.nn.functional as F

sn.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),    # 1x12x12 -> 8x6x6
    nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),                     # -> 16x6x6
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),       # -> 4 class scores
)
# one fixed batch: 4 textures (horizontal/vertical stripes, checkerboard, flat) plus noise
rng = np.random.default_rng(0)
rows, cols = np.indices((12, 12))
textures = np.stack([rows % 2, cols % 2, (rows + cols) % 2, np.full((12, 12), 0.5)])
labels = np.arange(16) % 4
images = textures[labels][:, None] + 0.3 * rng.standard_normal((16, 1, 12, 12))
images, labels = sn.tensor(images.astype(np.float32)), sn.tensor(labels)
optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

losses = []
for step in range(40):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} after {len(losses)} SGD steps")
'''

DOC = Path(__file__).resolve().parents[1] / "README.md"


def test_two_layer_cnn_learns_a_fixed_batch(capsys):
    namespace = {}
    exec(compile(EXAMPLE, "README example", "exec"), namespace)
    losses = namespace["losses"]
    assert len(losses) == 40 and np.all(np.isfinite(losses))
    assert losses[0] > 1.0  # about log(4) at the start: four classes, untrained
    assert losses[-1] < losses[0] / 50  # drops by a large factor
    assert "SGD steps" in capsys.readouterr().out


def test_doc_shows_exactly_the_tested_example():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert EXAMPLE in blocks, f"the two-layer CNN example in {DOC} differs from tests/test_example.py"
