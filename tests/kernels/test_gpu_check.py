"""tools/gpu_check.sh, the one command a GPU machine runs (issue 10), in its CPU smoke mode:
every step runs at tiny sizes, the resumed LeNet run must end bit-identical, the benchmarks
write their JSON, and the summary gathers it all; a failed step makes the exit non-zero.
"""
import json
import os
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "tools"))
import gpu_check  # noqa: E402

STEPS = ["install", "versions", "gpu-tests", "train", "dropout", "conv-bench", "deform-bench", "lenet-bench",
         "memcheck", "racecheck"]


def test_smoke_mode_runs_every_step_on_the_cpu(tmp_path, data_dir):
    out = tmp_path / "out"
    env = dict(os.environ, SCRATCHNET_GPU_CHECK_DEVICE="cpu", PYTHON=sys.executable, SCRATCHNET_DATA="",
               SCRATCHNET_CACHE=str(tmp_path / "cache"))
    done = subprocess.run(["bash", "tools/gpu_check.sh", str(data_dir / "fashion-mnist"), str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    log = (out / "gpu_check.log").read_text()
    assert done.returncode == 0, log[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_conv.json",
                                                     "gpu_deform.json", "gpu_lenet.json"]
    report = json.loads((out / "gpu_check.json").read_text())
    assert [s["step"] for s in report["steps"]] == STEPS and report["ok"]
    assert report["versions"]["device_asked"] == "cpu" and report["versions"]["numba"]
    assert report["train_resume"]["identical"] and len(report["train_resume"]["epochs"]) == 2
    assert report["steps"][STEPS.index("dropout")]["note"].startswith("skipped")  # the CPU's is in test_train.py
    routes = {row["route"] for row in report["gpu_conv"]["rows"]}
    assert {"im2col", "torch"} <= routes and report["gpu_conv"]["targets"]
    assert {(r["framework"], r["route"]) for r in report["gpu_deform"]["rows"]} >= {("scratchnet", "im2col"),
                                                                                   ("scratchnet", "reference")}
    assert report["gpu_lenet"]["torch"]["epoch_s"] > 0 and report["gpu_lenet"]["scratchnet"]["epoch_s"] > 0
    for step in STEPS:
        assert f"===== [{step}]" in log


def test_summary_fails_when_a_step_failed_and_lists_every_step(tmp_path, capsys):
    (tmp_path / "steps.txt").write_text("versions|0|2|\ntrain|1|30|\nmemcheck|0|0|skipped: no tool\n"
                                        "conv-bench|124|0|not run: out of time\n")
    (tmp_path / "versions.json").write_text('{"gpu": "X"}')
    assert gpu_check.summary(tmp_path, tmp_path / "summary.json") == 1
    report = json.loads((tmp_path / "summary.json").read_text())
    assert not report["ok"] and report["versions"] == {"gpu": "X"}
    assert [s["ok"] for s in report["steps"]] == [True, False, True, False]
    printed = capsys.readouterr().out
    assert "FAILED (1)" in printed and "FAILED (124)" in printed and "SOME STEPS FAILED" in printed


def test_usage_error_without_arguments():
    done = subprocess.run(["bash", "tools/gpu_check.sh"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "usage: bash tools/gpu_check.sh DATA_DIR OUT_DIR" in done.stderr
