"""``python -m scratchnet.study TOOL``: every subcommand run through the command line at a tiny size, with
options away from their defaults; each writes exactly the JSON its runner writes when called directly with
the same values, so no option is lost between the parser and the study (landscape's and deformable's CLI
tests are in their studies' files)."""
import json
from pathlib import Path

import pytest

import scratchnet as sn
from scratchnet import study
from scratchnet.models import get_model
from scratchnet.study.cli import build_parser

SEED = 3


@pytest.fixture
def weights(tmp_path):
    """Weights files of a LeNet and an SE-ResNet-20, initialised from another seed than the study's."""
    files = {}
    for name in ("lenet", "se_resnet20"):
        sn.manual_seed(11)
        files[name] = tmp_path / f"{name}.npz"
        sn.save(get_model(name, num_classes=10), files[name])
    return files


# tool: (its arguments, the same run called directly, the JSON it writes); w holds the weights files
CASES = {
    "gradflow": (lambda w: ["deep_tanh", "--steps", "2", "--batch-size", "4", "--lr", "0.03"],
                 lambda w, out: study.gradflow(["deep_tanh"], steps=2, batch_size=4, lr=0.03, out=out, seed=SEED),
                 "gradflow.json"),
    "joins": (lambda w: ["resnet20", "--batch-size", "2", "--side", "16"],
              lambda w, out: study.joins(["resnet20"], batch_size=2, side=16, out=out, seed=SEED),
              "joins.json"),
    "degradation": (lambda w: ["--models", "plain20", "--epochs", "0.5", "--limit", "64", "--batch-size", "16",
                               "--lr", "0.05", "--test-limit", "16", "--log-every", "1"],
                    lambda w, out: study.degradation(["plain20"], epochs=0.5, limit=64, batch_size=16, lr=0.05,
                                                     test_limit=16, log_every=1, out=out, seed=SEED),
                    "degradation.json"),
    "deconv": (lambda w: ["--model", "lenet", "--weights", w["lenet"], "--steps", "1", "--layer", "1",
                          "--images", "16"],
               lambda w, out: study.deconv("lenet", weights=w["lenet"], layer=1, images=16, out=out, seed=SEED),
               "deconv.json"),
    "features": (lambda w: ["--model", "lenet", "--weights", w["lenet"], "--steps", "1", "--layer", "2"],
                 lambda w, out: study.features("lenet", weights=w["lenet"], layer=2, out=out, seed=SEED),
                 "features.json"),
    "se": (lambda w: ["--model", "se_resnet20", "--weights", w["se_resnet20"], "--steps", "1", "--images", "30"],
           lambda w, out: study.se_weights("se_resnet20", weights=w["se_resnet20"], images=30, out=out, seed=SEED),
           "se_weights.json"),
    "cost": (lambda w: ["--models", "lenet5", "resnet20"],
             lambda w, out: study.cost(["lenet5", "resnet20"], out=out), "cost.json"),
}


# subcommands whose run through the command line is tested in their own study's file
ELSEWHERE = {"landscape": "test_study_landscape.py", "deformable": "test_study_deformable.py",
             "claims": "test_study_claims.py"}


def test_every_subcommand_has_a_cli_test():
    subcommands = next(a for a in build_parser()._actions if a.dest == "tool").choices
    assert set(subcommands) == set(CASES) | set(ELSEWHERE)
    for tool, file in ELSEWHERE.items():
        source = (Path(__file__).with_name(file)).read_text()
        assert f'"{tool}"' in source and "main(" in source, f"{file} runs no `study {tool}` through the CLI"


@pytest.mark.parametrize("tool", CASES)
def test_cli_passes_every_option_to_the_study(tool, weights, data_dir, tmp_path, capsys):
    arguments, direct, written = CASES[tool]
    argv = ["--out", tmp_path / "cli", "--data-dir", data_dir, "--seed", SEED, "--threads", sn.get_num_threads(),
            tool, *arguments(weights)]
    assert study.main([str(a) for a in argv]) == 0
    assert f"wrote {tmp_path / 'cli'}/" in capsys.readouterr().out
    direct(weights, tmp_path / "direct")
    cli = json.loads((tmp_path / "cli" / written).read_text())
    assert cli == json.loads((tmp_path / "direct" / written).read_text())
