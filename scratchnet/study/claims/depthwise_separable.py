"""MobileNet Sec. 3.1 and Table 4: a depthwise separable convolution costs 1/N + 1/Dk^2 of a full one."""
from fractions import Fraction

from ...models import get_model
from ...models.mobilenet import BLOCKS, STEM_CHANNELS
from ...nn import Conv2d, Sequential
from ...summary import summary
from .core import Claim, Outcome, cost_row, cost_verdict, millions

M = N = 512  # one of MobileNet's 14x14 layers (Table 1: five of them)
DF, DK = 14, 3
EQUATION_5 = Fraction(1, N) + Fraction(1, DK * DK)  # separable / full multiply-adds


def full_layer():
    return Conv2d(M, N, DK, padding=DK // 2, bias=False)


def separable_layer():
    return Sequential(Conv2d(M, M, DK, padding=DK // 2, groups=M, bias=False), Conv2d(M, N, 1, bias=False))


def mobilenet_closed_form(separable, classes=1000, side=224):
    """(parameters, multiply-adds) of MobileNet v1 at width 1.0 from Table 1: every conv followed by BN (2
    parameters per channel, no conv bias), the fc with its bias; DK^2 M DF^2 + M N DF^2 per separable block
    (Eq. 4) or DK^2 M N DF^2 per full one (Eq. 3)."""
    side = (side + 1) // 2  # the stem conv 3x3/2
    params, macs, channels = 27 * STEM_CHANNELS + 2 * STEM_CHANNELS, 27 * STEM_CHANNELS * side * side, STEM_CHANNELS
    for stride, out in BLOCKS:
        side = (side - 1) // stride + 1
        if separable:
            params += 9 * channels + 2 * channels + channels * out + 2 * out
            macs += (9 * channels + channels * out) * side * side
        else:
            params += 9 * channels * out + 2 * out
            macs += 9 * channels * out * side * side
        channels = out
    return params + channels * classes + classes, macs + channels * classes


def measure(context):
    full = summary(full_layer(), (M, DF, DF), print_table=False)
    separable = summary(separable_layer(), (M, DF, DF), print_table=False)
    full_closed, separable_closed = DK * DK * M * N * DF * DF, DK * DK * M * DF * DF + M * N * DF * DF
    ratio = Fraction(separable.total_macs, full.total_macs)
    rows = [cost_row(f"full {DK}x{DK} conv {M} -> {N} on {DF}x{DF}: DK^2 M N DF^2 mult-adds", None, full_closed,
                     full.total_macs),
            cost_row("depthwise + pointwise: DK^2 M DF^2 + M N DF^2 mult-adds", None, separable_closed,
                     separable.total_macs),
            cost_row("ratio separable / full = 1/N + 1/DK^2 (Eq. 5), exactly", str(EQUATION_5),
                     str(Fraction(separable_closed, full_closed)), str(ratio), agrees=ratio == EQUATION_5),
            cost_row("full / separable for this layer: '8 to 9 times less computation'", "8 to 9", None,
                     round(float(1 / ratio), 2), agrees=8 <= 1 / ratio <= 9)]
    heavy = context.size != "tiny"  # the full-convolution net's summary is a 4.9 GMAC forward
    nets = {}
    for separable_net, name, paper_params, paper_macs in ((False, "Conv MobileNet", 29.3, 4866),
                                                          (True, "MobileNet", 4.2, 569)):
        params, macs = nets[name] = mobilenet_closed_form(separable_net)
        counted = summary(get_model("mobilenet_v1", separable=separable_net), print_table=False) if heavy else None
        rows.append(cost_row(f"Table 4, {name}: M parameters", paper_params, params, counted and counted.total_params,
                             "M", rounding=millions(1)))
        rows.append(cost_row(f"Table 4, {name}: M mult-adds", paper_macs, macs, counted and counted.total_macs, "M",
                             rounding=millions(0)))
    (full_params, full_macs), (_, separable_macs) = nets["Conv MobileNet"], nets["MobileNet"]
    holds = ratio == EQUATION_5
    return Outcome(measured=f"ratio {ratio} = 1/{N} + 1/{DK * DK}, {float(1 / ratio):.2f}x cheaper; Conv MobileNet "
                            f"{full_params / 1e6:.1f}M params, {full_macs / 1e6:.1f}M mult-adds "
                            f"({full_macs / separable_macs:.2f}x MobileNet's)", verdict=cost_verdict(rows, holds),
                   rows=rows)


CLAIM = Claim(
    name="depthwise_separable",
    statement="A depthwise separable convolution costs 1/N + 1/Dk^2 of a standard convolution, 8 to 9 times less "
              "computation with 3x3 kernels; a MobileNet built of full convolutions has 29.3M parameters and 4866M "
              "mult-adds against MobileNet's 4.2M and 569M.",
    source="Howard et al. 2017, MobileNets, Sec. 3.1 (Eq. 3-5) and Table 4",
    kind="cost",
    experiment=f"sn.summary of one {DK}x{DK} conv {M} -> {N} on a {DF}x{DF} map against its depthwise + pointwise "
               f"pair, the ratio kept as a fraction; MobileNet v1 and its full-convolution twin "
               f"(mobilenet_v1(separable=False)) counted by sn.summary and from Table 1 in closed form.",
    expected="ratio exactly 1/N + 1/Dk^2; Table 4's 29.3M / 4866M and 4.2M / 569M",
    rule="holds when the measured ratio equals 1/N + 1/Dk^2 exactly; exact when every count also equals its closed "
         "form and Table 4 to its printed digits",
    measure=measure,
)
