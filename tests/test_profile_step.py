"""tools/profile_step.py: the per-op profile of a training step (op type and route, forward and backward)."""
import json
import sys

import numpy as np
import pytest

import scratchnet as sn
import scratchnet.functional as F
from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import profile_step  # noqa: E402


def test_lenet_step_profile_names_every_op_and_route():
    result = profile_step.profile("lenet5", batch=2, steps=1)
    rows = {(r["op"], r["route"]): r for r in result["rows"]}
    # LeNet-5's C1 (one input channel) runs on the depthwise kernels, C3 on im2col, C5 (one window) as a GEMM
    for route in ("depthwise", "im2col", "window"):
        assert rows[("Conv2d", route)]["calls"] == 1
        assert rows[("Conv2d", route)]["forward_s"] > 0 and rows[("Conv2d", route)]["backward_s"] > 0
    assert rows[("ReLU", "kernel")]["calls"] == 4 and rows[("MaxPool2d", "kernel")]["calls"] == 2
    assert rows[("Linear", "-")]["calls"] == 2 and ("CrossEntropy", "-") in rows
    # the step is split into ops, the optimizer's calls and what is left outside them
    parts = result["in_ops_s"] + sum(result["other"].values()) + result["outside_ops_s"]
    assert parts == pytest.approx(result["step_s"])
    assert set(result["other"]) == {"zero_grad", "optimizer step"}
    assert result["in_ops_s"] == pytest.approx(sum(r["total_s"] for r in result["rows"]))
    assert result["system_s"] >= 0 and result["page_faults"] >= 0


def test_route_of_tells_kernels_from_array_code():
    x = sn.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    assert profile_step.route_of(F.relu(x).creator) == "kernel"
    half = sn.tensor(np.ones((2, 3), np.float16), requires_grad=True)  # the kernels are float32/float64 only
    assert profile_step.route_of(F.relu(half).creator) == "reference"
    assert profile_step.route_of((x + 2).creator) == "-"  # an op without kernels
    assert profile_step.route_of((x * 2).creator) == "reference"  # mul's kernels take one value per plane


def test_detail_rows_carry_input_shapes_and_the_cli_prints_the_table(capsys, tmp_path):
    out = tmp_path / "profile.json"
    assert profile_step.main(["lenet5", "--batch", "2", "--steps", "1", "--detail", "--top", "3",
                              "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "outside ops" in text and "... 10 more rows" in text  # the 3 slowest of 13 (which: the run's timing)
    assert "page faults" in text.splitlines()[0]
    rows = json.loads(out.read_text())["rows"]
    lines = text.splitlines()
    printed = [row for row in rows if any(line.startswith(f"{row['op']} ({row['route']})")
                                          and line.rstrip().endswith(row["shapes"]) for line in lines)]
    assert len(rows) == 13 and printed == sorted(rows, key=lambda row: -row["total_s"])[:3]
    c3 = [row for row in rows if row["shapes"] == "2x6x14x14 16x6x5x5 16"]  # C3's input, weight and bias shapes
    assert [(row["op"], row["route"]) for row in c3] == [("Conv2d", "im2col")]


def test_unknown_model_is_one_error(capsys):
    with pytest.raises(SystemExit) as stop:
        profile_step.main(["no_such_net"])
    assert stop.value.code == 2 and "unknown model 'no_such_net'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [(["--batch", "0"], "--batch must be at least 1, got 0"),
                                        (["--steps", "-1"], "--steps must be at least 1, got -1"),
                                        (["--threads", "0"], "--threads must be at least 1, got 0"),
                                        (["--top", "-2"], "--top must be 0 (all rows) or more, got -2")])
def test_out_of_range_counts_are_one_error(argv, says, capsys):
    with pytest.raises(SystemExit) as stop:
        profile_step.main(["lenet5", *argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and says in err and "Traceback" not in err


def test_scaling_ranks_every_row_by_the_time_it_loses(capsys, tmp_path):
    """--scaling: one profile on 1 thread, one on 2, each row's loss t_2 - t_1 / 2 (the step's too), largest first;
    the thread count is what it was before."""
    before = sn.get_num_threads()
    out = tmp_path / "scaling.json"
    assert profile_step.main(["lenet5", "--batch", "2", "--steps", "1", "--threads", "2", "--scaling",
                              "--json", str(out)]) == 0
    assert sn.get_num_threads() == before
    text = capsys.readouterr().out
    assert "on 1 thread" in text and "2 threads ms" in text and "lost ms" in text and "Conv2d (im2col)" in text
    result = json.loads(out.read_text())
    assert result["threads"] == 2
    assert result["lost_s"] == pytest.approx(result["many_step_s"] - result["one_step_s"] / 2)
    rows = result["rows"]
    assert [r["lost_s"] for r in rows] == sorted((r["lost_s"] for r in rows), reverse=True)
    for r in rows:
        assert r["lost_s"] == pytest.approx(r["many_s"] - r["one_s"] / 2)
    labels = {r["op"] for r in rows}
    assert {"Conv2d", "ReLU", "optimizer step", "zero_grad", "outside ops (Python, autograd walk)"} <= labels
    # the rows are the whole step on each side: ops, the optimizer's calls and the time outside ops
    assert sum(r["one_s"] for r in rows) == pytest.approx(result["one_step_s"])
    assert sum(r["many_s"] for r in rows) == pytest.approx(result["many_step_s"])
    assert sum(r["lost_s"] for r in rows) == pytest.approx(result["lost_s"])


def test_scaling_needs_two_threads(capsys):
    with pytest.raises(SystemExit) as stop:
        profile_step.main(["lenet5", "--scaling", "--threads", "1"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--scaling compares 1 thread with more" in err and "Traceback" not in err
