"""GoogLeNet Sec. 1: twelve times fewer parameters than AlexNet (and "only 5 million", as Inception v3 recalls)."""
from ...models import get_model
from ...models.alexnet import ALEXNET
from ...models.googlenet import INCEPTION
from ...summary import summary
from .core import Claim, Outcome, cost_row, cost_verdict, erratum, millions


def alexnet_closed_form(classes=1000, groups=2):
    """Sec. 3.5 / Fig. 2: five convs (conv2, 4, 5 split over the two GPUs) and 9216-4096-4096-classes."""
    total, previous = 0, 3
    for maps, kernel, _, _, split, _ in ALEXNET:
        total += (previous // (groups if split else 1)) * kernel * kernel * maps + maps
        previous = maps
    return total + 256 * 6 * 6 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * classes + classes


def googlenet_closed_form(classes=1000):
    """Table 1's channel columns, every conv with a bias, no auxiliary heads (they are dropped at inference)."""
    def conv(c_in, c_out, k):
        return c_in * k * k * c_out + c_out
    total, channels = conv(3, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3), 192
    for n1, n3r, n3, n5r, n5, proj in INCEPTION.values():
        total += (conv(channels, n1, 1) + conv(channels, n3r, 1) + conv(n3r, n3, 3) + conv(channels, n5r, 1)
                  + conv(n5r, n5, 5) + conv(channels, proj, 1))
        channels = n1 + n3 + n5 + proj
    return total + channels * classes + classes


def measure(context):
    alexnet = summary(get_model("alexnet"), print_table=False).total_params
    googlenet = summary(get_model("googlenet", aux_logits=False), print_table=False).total_params
    single_gpu = get_model("alexnet", groups=1).num_parameters()
    ratio = alexnet / googlenet
    rows = [cost_row("AlexNet parameters (two-GPU split), millions: '60 million'", 60, alexnet_closed_form(), alexnet,
                     "M", rounding=lambda v: round(v / 1e7) * 10),
            cost_row("GoogLeNet parameters, no auxiliary heads, millions (Table 1's column sums to 6.8M)", 6.8,
                     googlenet_closed_form(), googlenet, "M", rounding=millions(1)),
            cost_row("AlexNet / GoogLeNet: '12 times fewer parameters'", 12, None, round(ratio, 2),
                     rounding=round),
            cost_row("AlexNet on one GPU (groups=1) / GoogLeNet", None, None, round(single_gpu / googlenet, 2))]
    errata = [erratum("GoogLeNet uses 12 times fewer parameters than AlexNet", "Szegedy et al. 2014, Sec. 1",
                      f"{ratio:.1f} times ({alexnet:,} / {googlenet:,}; {single_gpu / googlenet:.1f} against the "
                      f"single-GPU AlexNet's {single_gpu:,})",
                      "python -m scratchnet.study claims googlenet_vs_alexnet"),
              erratum("GoogLeNet has about 5 million parameters", "Szegedy et al. 2016 (Inception v3), Sec. 1, "
                      "repeated in the study notes", f"{googlenet:,} ({googlenet / 1e6:.1f}M) without the auxiliary "
                      f"heads, {get_model('googlenet').num_parameters():,} with them",
                      "python -m scratchnet.summary googlenet -o aux_logits=False")]
    return Outcome(measured=f"AlexNet {alexnet / 1e6:.2f}M, GoogLeNet {googlenet / 1e6:.2f}M: {ratio:.1f}x fewer",
                   verdict=cost_verdict(rows, holds=round(ratio) == 12), rows=rows, errata=errata)


CLAIM = Claim(
    name="googlenet_vs_alexnet",
    statement="GoogLeNet uses 12 times fewer parameters than the winning architecture of Krizhevsky et al. "
              "(AlexNet, 60 million parameters).",
    source="Szegedy et al. 2014, Going Deeper with Convolutions, Sec. 1; Krizhevsky et al. 2012, Sec. 1",
    kind="cost",
    experiment="sn.summary's parameter counts of alexnet (the paper's two-GPU net) and of googlenet without its "
               "auxiliary heads (inference), beside closed forms from AlexNet's layer table and GoogLeNet's Table 1.",
    expected="AlexNet 60M, GoogLeNet 6.8M (Table 1), a ratio of 12",
    rule="holds when the ratio rounds to 12; exact when every count also equals its closed form and the papers' "
         "numbers to their printed digits",
    measure=measure,
)
