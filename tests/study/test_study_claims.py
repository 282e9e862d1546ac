"""python -m scratchnet.study claims: every claim at the tiny size through the CLI (its JSON, the page generated
from it), the cost claims' numbers exact, the verdict rules, the CIFAR-10 branch skipped cleanly, bad input."""
import json
from fractions import Fraction

import numpy as np
import pytest

from scratchnet import study
from scratchnet.models import get_model
from scratchnet.study.claims import CLAIMS, list_claims
from scratchnet.study.claims.core import (EXACT, NOT_SUPPORTED, SKIPPED, SUPPORTED, better_everywhere, cost_row,
                                          cost_verdict, mean_sd)
from scratchnet.study.claims.training import Data, fit

VERDICTS = (EXACT, "does not hold", SUPPORTED, NOT_SUPPORTED, SKIPPED)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
    """Every claim once at the tiny size, through the command line, CIFAR-10 included (not here: skipped)."""
    out = tmp_path_factory.mktemp("claims")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCRATCHNET_DATA", str(data_dir))
        assert study.main(["--out", str(out), "claims", "--tiny", "--docs", str(out / "claims.md")]) == 0
    return out, {name: json.loads((out / "claims" / f"{name}.json").read_text()) for name in list_claims()}


def rows_by_item(record):
    (outcome,) = record["results"].values()
    return {row["item"]: row for row in outcome["rows"]}


# --------------------------------------------------------------------------- the run, its JSON and its page


def test_every_claim_writes_its_json(tiny_run):
    out, records = tiny_run
    assert set(records) == set(CLAIMS) and len(CLAIMS) == 19
    for name, record in records.items():
        claim = CLAIMS[name]
        assert record["statement"] == claim.statement and record["source"] == claim.source
        assert record["size"] == "tiny" and record["command"] == f"python -m scratchnet.study claims {name} --tiny"
        assert record["seconds"] >= 0 and record["cpu_seconds"] >= 0 and len(record["load_average"]) == 2
        for dataset, outcome in record["results"].items():
            assert outcome["verdict"] in VERDICTS or outcome["verdict"].startswith("holds; "), (name, outcome)
            if claim.kind == "training":
                assert dataset in ("fashion-mnist", "cifar10") and record["seeds"] == [0, 1]
            else:
                assert dataset == "exact" and record["seeds"] == []


def test_training_claims_report_every_seed_and_skip_cifar(tiny_run, data_dir):
    out, records = tiny_run
    for name, record in records.items():
        if CLAIMS[name].kind != "training":
            continue
        assert record["results"]["cifar10"]["verdict"] == SKIPPED  # no CIFAR-10 files on the test machines
        assert "CIFAR-10 is not here" in record["results"]["cifar10"]["measured"]
        outcome = record["results"]["fashion-mnist"]
        assert outcome["verdict"] in (SUPPORTED, NOT_SUPPORTED)
        assert outcome["rows"] and all(len(row["values"]) == 2 for row in outcome["rows"])
        for row in outcome["rows"]:
            assert (row["mean"], row["sd"]) == pytest.approx(mean_sd(row["values"]))
        assert (out / outcome["figure"]).stat().st_size > 0
        assert "±" in outcome["measured"]


def test_the_page_is_generated_from_the_json(tiny_run):
    out, records = tiny_run
    page = (out / "claims.md").read_text()
    assert page.startswith("# The study notes' claims, checked")
    for name, record in records.items():
        assert f"### {name}" in page and record["statement"] in page
        for dataset, outcome in record["results"].items():
            if outcome["verdict"] == SKIPPED:  # one sentence after the table names the data that was not here
                assert f"Skipped on {dataset} (11 claims): CIFAR-10 is not here" in page
                continue
            assert f"**{outcome['verdict']}**" in page
            if outcome.get("figure"):  # copied beside the page, where the docs keep their pictures
                name = outcome["figure"].split("/")[-1]
                assert f"](images/claims/{name})" in page and (out / "images" / "claims" / name).stat().st_size > 0
    errata = page[page.index("## Errata"):]
    assert "GoogLeNet has about 5 million parameters" in errata and "6,998,552 (7.0M)" in errata
    assert "VGG-16's convolutional layers" in errata and "13 convolutions" in errata
    assert "fc6 reads 256x6x6 = 9216 values" in errata
    assert "```python" not in page  # tests/test_docs.py runs python blocks; the page has none


def test_running_one_claim_updates_its_json_and_keeps_the_others(tiny_run, tmp_path, data_dir, monkeypatch):
    out, records = tiny_run
    monkeypatch.setenv("SCRATCHNET_DATA", str(data_dir))
    copy = tmp_path / "out"
    (copy / "claims").mkdir(parents=True)
    for name in list_claims():
        (copy / "claims" / f"{name}.json").write_text(json.dumps(records[name]))
    assert study.main(["--out", str(copy), "claims", "vgg_3x3_stacks", "--tiny", "--no-docs"]) == 0
    assert not (copy / "claims.md").exists()
    assert study.main(["--out", str(copy), "claims", "vgg_3x3_stacks", "--tiny", "--docs", str(copy / "p.md")]) == 0
    page = (copy / "p.md").read_text()
    assert all(f"### {name}" in page for name in list_claims())  # the page covers every JSON there is


# --------------------------------------------------------------------------- cost claims: the numbers, exactly


def test_vgg_3x3_stacks_numbers(tiny_run):
    rows = rows_by_item(tiny_run[1]["vgg_3x3_stacks"])
    c = 64
    assert rows["receptive field of 2 stacked 3x3 convs"]["summary"] == 5
    assert rows["receptive field of 3 stacked 3x3 convs"]["summary"] == 7
    assert rows[f"weights of 3 stacked 3x3 convs (C={c})"]["summary"] == 27 * c * c
    assert rows[f"weights of one 7x7 conv (C={c})"]["summary"] == 49 * c * c
    assert rows[f"multiply-adds of 2 stacked 3x3 convs on 56x56"]["summary"] == 18 * c * c * 56 * 56
    assert tiny_run[1]["vgg_3x3_stacks"]["results"]["exact"]["verdict"] == EXACT


def test_depthwise_separable_numbers(tiny_run):
    rows = rows_by_item(tiny_run[1]["depthwise_separable"])
    ratio = rows["ratio separable / full = 1/N + 1/DK^2 (Eq. 5), exactly"]
    assert ratio["summary"] == ratio["paper"] == str(Fraction(1, 512) + Fraction(1, 9)) == "521/4608"
    assert rows["Table 4, Conv MobileNet: M parameters"]["closed_form"] == 29_294_088
    assert rows["Table 4, Conv MobileNet: M mult-adds"]["closed_form"] == 4_867_293_184  # paper: 4866M
    assert rows["Table 4, Conv MobileNet: M mult-adds"]["agrees"] is False
    assert rows["Table 4, MobileNet: M mult-adds"]["closed_form"] == 568_740_352


def test_inception_and_googlenet_numbers(tiny_run):
    rows = rows_by_item(tiny_run[1]["inception_bottlenecks"])
    assert rows["inception 3a, with 1x1 reductions (Fig. 2(b)), M mult-adds"]["summary"] == 128_049_152
    assert rows["inception 3a, naive (Fig. 2(a)), same outputs, M mult-adds"]["summary"] == 303_464_448
    assert rows["inception 5a, with 1x1 reductions (Fig. 2(b)), M mult-adds"]["agrees"] is False  # Table 1: 54M
    rows = rows_by_item(tiny_run[1]["googlenet_vs_alexnet"])
    alexnet, googlenet = get_model("alexnet"), get_model("googlenet", aux_logits=False)
    assert rows["AlexNet parameters (two-GPU split), millions: '60 million'"]["closed_form"] == alexnet.num_parameters()
    row = rows["GoogLeNet parameters, no auxiliary heads, millions (Table 1's column sums to 6.8M)"]
    assert row["closed_form"] == row["summary"] == googlenet.num_parameters() == 6_998_552
    assert tiny_run[1]["googlenet_vs_alexnet"]["results"]["exact"]["verdict"] == "does not hold"  # 8.7x, not 12x


def test_resnet_densenet_efficientnet_numbers(tiny_run):
    rows = rows_by_item(tiny_run[1]["resnet_stage_cost"])
    per_layer = [row["summary"] for item, row in rows.items() if item.startswith("stage ")]
    assert per_layer == [115_605_504] * 4  # 56^2 9 64^2 = 28^2 9 128^2 = 14^2 9 256^2 = 7^2 9 512^2
    paper_stride = rows["ResNet-50 (Table 1; projections, stride on the first 1x1), G mult-adds"]
    assert paper_stride["closed_form"] == 3_857_973_248 and paper_stride["agrees"] is False  # Table 1: 3.8
    assert rows["ResNet-50, stride on the 3x3 (torchvision's v1.5), G mult-adds"]["closed_form"] == 4_089_184_256
    assert rows["VGG-19, G mult-adds: '19.6 billion FLOPs'"]["closed_form"] == 19_632_062_464
    rows = rows_by_item(tiny_run[1]["densenet_growth"])
    assert rows["DenseNet-BC (L=100, k=12), M parameters"]["summary"] == 769_162
    assert rows["DenseNet-BC (L=250, k=24), M parameters"]["closed_form"] == 15_324_406
    assert rows["pre-activation ResNet-1001 (He et al. 2016, Table 3), M parameters"]["closed_form"] == 10_327_706
    record = tiny_run[1]["efficientnet_scaling"]
    rows = rows_by_item(record)
    b0 = rows["B0 (published: width 1.0, depth 1.0, 224px), G mult-adds (Table 2)"]
    assert b0["closed_form"] == b0["summary"] == 385_814_752  # torchvision's published 0.386 GMACs
    assert rows["B7 (published: width 2.0, depth 3.1, 600px), G mult-adds (Table 2)"]["closed_form"] == 37_745_884_192
    assert rows["phi=1: Eq. 3's stage table (channels, layers) equals B1's"]["closed_form"] is False
    assert "none of the seven published nets is Eq. 3's" in record["results"]["exact"]["errata"][0]["measured"]


@pytest.mark.parametrize("width, depth, side", [(1.0, 1.0, 64), (1.1 ** 3, 1.2 ** 3, 48), (1.4, 1.8, 33)])
def test_efficientnet_closed_form_equals_the_summary(width, depth, side):
    """The claim's closed form counts what sn.summary counts, at inputs small enough for a test."""
    from scratchnet.study.claims.efficientnet_scaling import closed_form_macs
    from scratchnet.summary import summary
    model = get_model("efficientnet_b0", width_mult=width, depth_mult=depth, resolution=side)
    assert closed_form_macs(width, depth, side) == summary(model, print_table=False).total_macs


def test_errata_claim_is_exact(tiny_run):
    record = tiny_run[1]["notes_errata"]
    assert record["results"]["exact"]["verdict"] == EXACT
    rows = rows_by_item(record)
    assert rows["AlexNet fc6: inputs (256 x 6 x 6)"]["summary"] == 9216
    assert rows["VGG-16 (configuration D): convolutional layers"]["summary"] == 13


# --------------------------------------------------------------------------- the rules


def test_better_everywhere_needs_every_seed_and_a_margin_beyond_the_spread():
    assert better_everywhere([0.10, 0.11, 0.12], [0.20, 0.21, 0.22])[0]
    assert not better_everywhere([0.10, 0.25, 0.12], [0.20, 0.21, 0.22])[0]  # one seed the other way
    assert not better_everywhere([0.10, 0.20, 0.30], [0.11, 0.21, 0.31])[0]  # every seed, but within the spread
    assert better_everywhere([0.9, 0.8], [0.5, 0.4], lower_is_better=False)[0]
    holds, detail = better_everywhere([1.0, 2.0], [3.0, 2.5])
    assert holds and "better in 2 of 2 seeds" in detail


def test_cost_rows_and_verdicts():
    assert cost_row("x", 0.8, 769_162, 769_162, rounding=lambda v: round(v / 1e6, 1))["agrees"]
    assert cost_row("x", 3.8, 3_857_973_248, None, rounding=lambda v: round(v / 1e9, 1))["agrees"] is False
    assert cost_row("x", 5, 5, 6, rounding=int)["agrees"] is False  # a summary that misses its closed form
    assert cost_row("x", None, 5, 5)["agrees"] is None
    rows = [cost_row("a", 1, 1, 1, rounding=int), cost_row("b", 2, 3, 3, rounding=int)]
    assert cost_verdict(rows[:1]) == EXACT and cost_verdict(rows) == "holds; 1 of the paper's numbers differ"
    assert cost_verdict(rows, holds=False) == "does not hold"


def test_fit_pairs_seeds_and_records_windows():
    """Same seed, same batches and initialisation: the same curve; the windows average the logged steps."""
    from scratchnet import backend
    from scratchnet.nn import Flatten, Linear, Sequential
    rng = np.random.default_rng(0)
    data = Data("toy", rng.standard_normal((40, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 40),
                rng.standard_normal((8, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 8))

    def run(seed):
        backend.manual_seed(seed)
        return fit(Sequential(Flatten(), Linear(16, 3)), data, 6, 8, 0.1, seed, log_every=3)

    first, again, other = run(0), run(0), run(1)
    assert first == again and first["step"] == [3, 6] and len(first["error"]) == 2 and first["diverged"] is None
    assert first["loss"] != other["loss"]


def test_auxiliary_claims_conv1_gradient_is_the_losses_gradient():
    """The claim's |dL/dW conv1| (read from .grad after backward) equals the norm of sn.autograd.grad of the
    same loss, with the auxiliary terms and without; the auxiliary terms change it."""
    import scratchnet as sn
    from scratchnet import backend
    from scratchnet.study.claims.auxiliary_classifiers import SIDE, conv1_gradient, googlenet
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 1, SIDE, SIDE)).astype(np.float32), rng.integers(0, 10, 2)
    backend.manual_seed(0)
    model = googlenet(1, aux_logits=True)
    weight = model.conv1.conv.weight
    norms = {}
    for with_aux in (True, False):
        measured = conv1_gradient(model, x, y, with_aux)
        assert isinstance(weight.grad, sn.Tensor)
        backend.manual_seed(0)  # the dropout masks conv1_gradient drew
        out = model(sn.tensor(x))
        loss = model.loss(out, sn.tensor(y)) if with_aux else model.loss(model.main_output(out), sn.tensor(y))
        (expected,) = sn.autograd.grad(loss, [weight])
        assert abs(measured - float(np.linalg.norm(expected.numpy()))) <= 1e-5 * measured
        norms[with_aux] = measured
    assert norms[True] != norms[False]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("argv, message", [
    (["claims", "no_such_claim", "--tiny"], "unknown claim 'no_such_claim'"),
    (["claims", "lrn", "--seeds", "0"], "--seeds: must be a positive int, got 0"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert study.main(["--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_list_names_every_claim(capsys):
    assert study.main(["claims", "--list"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in list_claims()) and "wrote" not in printed
