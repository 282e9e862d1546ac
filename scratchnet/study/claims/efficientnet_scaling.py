"""EfficientNet Sec. 3.3: compound scaling by phi (depth alpha^phi, width beta^phi, resolution gamma^phi) grows the
FLOPs by about 2^phi; B1-B7 are said to be obtained this way."""
import math

from ...models import get_model
from ...models.efficientnet import ALPHA, B0_STAGES, BETA, GAMMA, VARIANTS, _make_divisible, compound_scaling
from ...models.efficientnet import scale_stages
from ...summary import summary
from ..common import plt, save_figure
from .core import Claim, Outcome, billions, cost_row, cost_verdict, erratum

# Table 2: FLOPs (billions of multiply-adds) as printed, with the number of decimals printed
TABLE_2_FLOPS = {0: (0.39, 2), 1: (0.70, 2), 2: (1.0, 1), 3: (1.8, 1), 4: (4.2, 1), 5: (9.9, 1), 6: (19, 0), 7: (37, 0)}
CHEAP_RESOLUTION = 345  # --quick counts with sn.summary up to this input side (B0-B3 and phi <= 3)


def closed_form_macs(width, depth, resolution, classes=1000):
    """Multiply-adds of B0's table scaled by (width, depth) at ``resolution``: the 3x3/2 stem; per MBConv the
    expansion 1x1 (absent at ratio 1), the depthwise k x k, SE's two FCs (expanded -> in/4 -> expanded), the
    projection 1x1; the 1x1 head to 4x the last width; the fc."""
    stages = scale_stages(B0_STAGES, width, depth)
    side = (resolution - 1) // 2 + 1
    macs = side * side * 3 * 9 * stages[0][3]
    for expand, kernel, stride, c_in, c_out, layers in stages:
        for index in range(layers):
            inputs = c_in if index == 0 else c_out
            expanded = _make_divisible(inputs * expand)
            if expanded != inputs:
                macs += side * side * inputs * expanded
            side = (side + 2 * ((kernel - 1) // 2) - kernel) // (stride if index == 0 else 1) + 1
            macs += side * side * expanded * kernel * kernel + 2 * expanded * max(1, inputs // 4)
            macs += side * side * expanded * c_out
    last = stages[-1][4]
    return macs + side * side * last * 4 * last + 4 * last * classes


def counted_macs(context, side, **options):
    """sn.summary's count where the size allows the forward at ``side`` pixels, else None."""
    if context.size == "full" or (context.size == "quick" and side <= CHEAP_RESOLUTION) or (
            context.size == "tiny" and side <= 224):
        return summary(get_model("efficientnet_b0", **options), print_table=False).total_macs
    return None


def measure(context):
    rows, growth = [], {}
    base = closed_form_macs(1.0, 1.0, 224)
    for phi in range(8):
        width, depth, resolution, _ = VARIANTS[f"b{phi}"]
        paper, digits = TABLE_2_FLOPS[phi]
        macs = closed_form_macs(width, depth, resolution)
        rows.append(cost_row(f"B{phi} (published: width {width}, depth {depth}, {resolution}px), G mult-adds "
                             f"(Table 2)", paper, macs, counted_macs(context, resolution, width_mult=width,
                                                                    depth_mult=depth, resolution=resolution), "G",
                             rounding=billions(digits)))
        growth[phi] = {"table": macs / base}
    for phi in range(1, 8):
        width, depth, resolution = compound_scaling(phi)
        macs = closed_form_macs(width, depth, resolution)
        rows.append(cost_row(f"phi={phi} by Eq. 3 (width {width:.3f}, depth {depth:.3f}, {resolution}px), "
                             f"G mult-adds", None, macs, counted_macs(context, resolution, phi=phi), "G"))
        same = scale_stages(B0_STAGES, width, depth) == scale_stages(B0_STAGES, *VARIANTS[f"b{phi}"][:2])
        rows.append(cost_row(f"phi={phi}: Eq. 3's stage table (channels, layers) equals B{phi}'s", None, same, None))
        growth[phi].update(formula=macs / base, same_table=same)
    exponents = {phi: math.log2(g["formula"]) / phi for phi, g in growth.items() if phi}
    holds = all(0.85 <= e <= 1.15 for e in exponents.values())
    for phi in range(1, 8):
        rows.append(cost_row(f"phi={phi}: FLOPs / B0's, Eq. 3 net (2^phi = {2 ** phi}, 1.92^phi = "
                             f"{(ALPHA * BETA ** 2 * GAMMA ** 2) ** phi:.1f})", None,
                             round(growth[phi]["formula"], 2), None))
        rows.append(cost_row(f"phi={phi}: FLOPs / B0's, published B{phi}", None, round(growth[phi]["table"], 2), None))
    figure = plot(growth, context)
    differ = sum(not growth[phi]["same_table"] for phi in range(1, 8))
    b7, phi7 = VARIANTS["b7"], compound_scaling(7)
    errata = [erratum("Scaling up B0 by Eq. 3 (alpha = 1.2, beta = 1.1, gamma = 1.15) with phi = 1..7 gives "
                      "EfficientNet-B1 to B7", "Tan & Le 2019, Sec. 4",
                      f"none of the seven published nets is Eq. 3's ({differ} of 7 stage tables differ; phi=1 and "
                      f"phi=2 round to B2's and B3's); B7 is width {b7[0]}, depth {b7[1]}, {b7[2]}px where phi=7 gives "
                      f"{phi7[0]:.2f}, {phi7[1]:.2f}, {phi7[2]}px", "python -m scratchnet.study claims "
                      "efficientnet_scaling")] if differ else []
    return Outcome(measured=f"Eq. 3 nets: FLOPs x{growth[7]['formula']:.0f} at phi=7 (2^7 = 128, 1.92^7 = 97), "
                            f"log2(ratio)/phi {min(exponents.values()):.2f}-{max(exponents.values()):.2f}; "
                            f"the published B1-B7 differ from Eq. 3 in {differ} of 7 stage tables",
                   verdict=cost_verdict(rows, holds), rows=rows, figure=figure, errata=errata,
                   notes="B1-B7's published coefficients (the official code's, torchvision's) are not Eq. 3's: phi=1 "
                         "and phi=2 round to B2's and B3's stage tables, and B7 is width 2.0, depth 3.1, 600px where "
                         "phi=7 gives 1.95, 3.58, 596 (tensorflow/tpu#390).")


def plot(growth, context):
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6.5, 4.2))
    phis = sorted(growth)
    ax.semilogy(phis, [2.0 ** p for p in phis], "k--", label="2^phi")
    ax.semilogy(phis, [(ALPHA * BETA ** 2 * GAMMA ** 2) ** p for p in phis], "k:", label="(alpha beta^2 gamma^2)^phi")
    ax.semilogy(phis[1:], [growth[p]["formula"] for p in phis[1:]], "o-", label="nets from Eq. 3")
    ax.semilogy(phis, [growth[p]["table"] for p in phis], "s-", label="published B0-B7")
    ax.set(xlabel="phi (B-number)", ylabel="multiply-adds / B0's", title="EfficientNet compound scaling")
    ax.grid(alpha=0.3)
    ax.legend()
    path = context.figure_path()
    save_figure(fig, path.parent, path.name)
    return str(path.relative_to(context.out))


CLAIM = Claim(
    name="efficientnet_scaling",
    statement="Compound scaling sets depth d = alpha^phi, width w = beta^phi and resolution r = gamma^phi with "
              "alpha = 1.2, beta = 1.1, gamma = 1.15 (alpha beta^2 gamma^2 ~ 2), so the FLOPs grow by about 2^phi; "
              "scaling up B0 this way gives EfficientNet-B1 to B7.",
    source="Tan & Le 2019, EfficientNet, Sec. 3.3 (Eq. 3), Sec. 4 and Table 2",
    kind="cost",
    experiment="Multiply-adds of B0 scaled by Eq. 3 for phi = 1..7 (round_filters to multiples of 8, ceil for the "
               "layers, as the reference code) and of the published B0-B7, in closed form from B0's table and by "
               f"sn.summary (--quick: inputs up to {CHEAP_RESOLUTION}px; --full: all); Eq. 3's stage tables "
               f"against the published ones; Table 2's FLOPs.",
    expected="FLOPs x2^phi (1.92^phi before rounding); Eq. 3's nets equal to B1-B7; Table 2's FLOPs",
    rule="holds when log2(FLOPs(phi) / FLOPs(0)) / phi lies in [0.85, 1.15] for every phi = 1..7 of the Eq. 3 nets; "
         "exact when, besides, every count equals its closed form, every published B-net equals Eq. 3's and Table 2's "
         "FLOPs are reproduced to their printed digits",
    measure=measure,
)
