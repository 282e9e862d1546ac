"""VGG Sec. 2.3: a stack of 3x3 convolutions sees as far as one larger kernel, with fewer weights."""
from ...nn import Conv2d, Sequential
from ...summary import summary
from .core import Claim, Outcome, cost_row, cost_verdict

C, SIDE = 64, 56  # C channels in and out of every layer, on a 56x56 map (VGG's third block has 256 on 56x56)


def stack(layers, kernel):
    """``layers`` kernel x kernel convs, C -> C, 'same' padding, no bias (the paper counts weights)."""
    return Sequential(*[Conv2d(C, C, kernel, padding=kernel // 2, bias=False) for _ in range(layers)])


def closed_form(layers, kernel):
    """(weights, multiply-adds, receptive field): layers * k^2 C^2, that times the map's pixels, 1 + layers (k - 1)."""
    weights = layers * kernel * kernel * C * C
    return weights, weights * SIDE * SIDE, 1 + layers * (kernel - 1)


def measure(context):
    rows, holds = [], True
    for layers, big, paper_weights in ((2, 5, None), (3, 7, (27, 49))):
        small, large = summary(stack(layers, 3), (C, SIDE, SIDE), print_table=False), summary(
            stack(1, big), (C, SIDE, SIDE), print_table=False)
        (w_s, m_s, rf_s), (w_l, m_l, rf_l) = closed_form(layers, 3), closed_form(1, big)
        rows.append(cost_row(f"receptive field of {layers} stacked 3x3 convs", big, rf_s,
                             small.layers[-1].receptive_field[0], "pixels", rounding=int))
        rows.append(cost_row(f"receptive field of one {big}x{big} conv", big, rf_l, large.layers[-1].receptive_field[0],
                             "pixels", rounding=int))
        rows.append(cost_row(f"weights of {layers} stacked 3x3 convs (C={C})",
                             paper_weights and paper_weights[0] * C * C, w_s, small.total_params, rounding=int))
        rows.append(cost_row(f"weights of one {big}x{big} conv (C={C})", paper_weights and paper_weights[1] * C * C,
                             w_l, large.total_params, rounding=int))
        rows.append(cost_row(f"multiply-adds of {layers} stacked 3x3 convs on {SIDE}x{SIDE}", None, m_s,
                             small.total_macs))
        rows.append(cost_row(f"multiply-adds of one {big}x{big} conv on {SIDE}x{SIDE}", None, m_l, large.total_macs))
        holds &= rf_s == rf_l and w_s < w_l and m_s < m_l
    more = round(100 * (49 / 27 - 1))
    rows.append(cost_row("one 7x7 conv has this much more weights than three 3x3 (49/27 - 1)", 81, more, None, "%",
                         rounding=int))
    return Outcome(measured=f"RF 5 and 7; weights 18C^2 vs 25C^2 and 27C^2 vs 49C^2 ({more}% more); "
                            f"multiply-adds in the same ratios", verdict=cost_verdict(rows, holds), rows=rows)


CLAIM = Claim(
    name="vgg_3x3_stacks",
    statement="A stack of two 3x3 conv layers has an effective receptive field of 5x5 and three of them 7x7, "
              "while three 3x3 layers hold 27C^2 weights against 49C^2 for one 7x7 layer (81% more).",
    source="Simonyan & Zisserman 2015, Very Deep Convolutional Networks, Sec. 2.3",
    kind="cost",
    experiment=f"sn.summary of 2 and 3 stacked 3x3 convs against one 5x5 and one 7x7 (C={C} channels in and out, "
               f"no bias, {SIDE}x{SIDE} map): receptive field, weights, multiply-adds; beside the closed forms "
               f"1 + n(k-1), n k^2 C^2 and n k^2 C^2 H W.",
    expected="receptive fields 5 and 7; 27C^2 vs 49C^2 weights (81% more); fewer multiply-adds for the stacks",
    rule="exact: every count of sn.summary equals its closed form and every number the paper prints",
    measure=measure,
)
