"""python -m scratchnet.summary's options: --list, --dtype, --batch-size and --device reach the summary (its
printed table equals the one sn.summary prints for the same model, dtype, batch and device, and says them);
the lenet5 table docs/summary.md shows is what the command prints."""
import re

import numpy as np
import pytest

from conftest import REPO
from scratchnet.models import get_model, list_models
from scratchnet.summary import main, summary


def printed_by(capsys, argv):
    assert main(argv) == 0
    return capsys.readouterr().out


def test_list_prints_every_model(capsys):
    assert printed_by(capsys, ["--list"]).split() == list_models()


@pytest.mark.parametrize("dtype, batch", [("float32", 1), ("float64", 3)])
def test_dtype_and_batch_size_reach_the_table(capsys, dtype, batch):
    out = printed_by(capsys, ["lenet5", "--dtype", dtype, "--batch-size", str(batch), "--device", "cpu"])
    model = get_model("lenet5").to(dtype=dtype)
    result = summary(model, batch_size=batch, print_table=False)
    assert out == f"lenet5\n{result.table()}\n"
    assert f"Input: {batch} x (1, 32, 32) {dtype}" in out
    c1 = result.layers[0]  # memory for the whole batch at the dtype's width; MACs per sample
    assert c1.output_shape == (batch, 6, 28, 28) and c1.macs == 28 * 28 * 6 * 25
    assert c1.activation_kb == batch * 6 * 28 * 28 * np.dtype(dtype).itemsize / 1024


@pytest.mark.gpu
def test_device_gpu_prints_the_cpu_table(capsys):
    on_cpu = printed_by(capsys, ["lenet5", "--batch-size", "2"])
    assert printed_by(capsys, ["lenet5", "--batch-size", "2", "--device", "gpu"]) == on_cpu


def test_docs_lenet5_table_is_what_the_command_prints(capsys):
    page = (REPO / "docs" / "summary.md").read_text(encoding="utf-8")
    shown = re.search(r"`python -m scratchnet\.summary lenet5`:\n\n```\n(.*?)```", page, flags=re.S)[1]
    assert printed_by(capsys, ["lenet5"]) == "lenet5\n" + shown
