"""ResNet Sec. 3.3: halving the map while doubling the filters keeps the time complexity per layer."""
from ...models import get_model
from ...models.resnet import IMAGENET_DEPTHS, IMAGENET_WIDTHS
from ...models.vgg import CONFIGS, M
from ...summary import summary
from .core import Claim, Outcome, billions, cost_row, cost_verdict

TABLE_1_GFLOPS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}  # the "FLOPs" row, x10^9 multiply-adds


def resnet_closed_form(depth, stride_in_1x1=True, shortcuts=True):
    """Multiply-adds of ResNet-``depth`` at 224x224 from Table 1: the stem, every unit's convs (the 1x1 stride-2
    projection where a stage starts), the fc. ``stride_in_1x1``: a bottleneck strides on its first 1x1 conv (the
    paper) or on its 3x3 (torchvision, "v1.5")."""
    kind, units = IMAGENET_DEPTHS[depth]
    expansion = 1 if kind == "basic" else 4
    macs, channels = 112 * 112 * 3 * 49 * 64, 64
    for stage, (count, width) in enumerate(zip(units, IMAGENET_WIDTHS)):
        side = 56 >> stage
        for unit in range(count):
            strided = stage > 0 and unit == 0
            if kind == "basic":
                macs += side * side * 9 * (channels * width + width * width)
            else:
                first_side = side if stride_in_1x1 or not strided else 2 * side
                macs += first_side ** 2 * channels * width + side * side * (9 * width * width + width * 4 * width)
            out = width * expansion
            if shortcuts and unit == 0 and (strided or channels != out):
                macs += side * side * channels * out
            channels = out
    return macs + channels * 1000


def vgg_closed_form(config="E"):
    """Multiply-adds of a VGG column of Table 1 at 224x224: 3x3 convs on maps halved at each pool, three FCs."""
    macs, side, channels = 0, 224, 3
    for entry in CONFIGS[config]:
        if entry == M:
            side //= 2
            continue
        macs += side * side * 9 * channels * entry
        channels = entry
    return macs + channels * 49 * 4096 + 4096 * 4096 + 4096 * 1000


def per_layer_rows(model_summary):
    """The multiply-adds of every 3x3 conv of resnet34 that neither starts a stage nor strides, per stage."""
    rows = []
    for stage, width in enumerate(IMAGENET_WIDTHS):
        side = 56 >> stage
        macs = {r.macs for r in model_summary.layers if r.name.startswith(f"layer{stage + 1}.")
                and r.type == "Conv2d" and not r.name.startswith(f"layer{stage + 1}.0.")}
        counted = macs.pop() if len(macs) == 1 else sorted(macs)
        rows.append(cost_row(f"stage {stage + 1}: each 3x3 conv, {width} filters on {side}x{side}", None,
                             side * side * 9 * width * width, counted))
    return rows


def measure(context):
    heavy = context.size != "tiny"  # VGG-19 and ResNet-152 at 224: 19.6 and 11.3 GMAC forwards
    resnet34 = summary(get_model("resnet34"), print_table=False)
    rows = per_layer_rows(resnet34)
    holds = len({row["summary"] for row in rows}) == 1 and all(isinstance(r["summary"], int) for r in rows)
    for depth, paper in TABLE_1_GFLOPS.items():
        # ResNet-18/34 as Sec. 4.1 first compares them: option A (zero padding: no projection to count), the 3.6G
        # of the 34-layer net being the plain net's; the bottleneck nets with projections and the paper's stride
        basic = IMAGENET_DEPTHS[depth][0] == "basic"
        options = dict(shortcut="A") if basic else dict(stride_in_1x1=True)
        counted = None
        if heavy or basic:
            counted = summary(get_model(f"resnet{depth}", **options), print_table=False).total_macs
        label = "option A" if basic else "projections, stride on the first 1x1"
        rows.append(cost_row(f"ResNet-{depth} (Table 1; {label}), G mult-adds", paper,
                             resnet_closed_form(depth, shortcuts=not basic), counted, "G",
                             rounding=billions(1)))
    for depth in (50, 101, 152):  # torchvision's counts (tests/summary checks them against its published GMACs)
        counted = summary(get_model(f"resnet{depth}"), print_table=False).total_macs if context.size == "full" else None
        rows.append(cost_row(f"ResNet-{depth}, stride on the 3x3 (torchvision's v1.5), G mult-adds", None,
                             resnet_closed_form(depth, stride_in_1x1=False), counted, "G"))
    plain = summary(get_model("plain34"), print_table=False).total_macs if heavy else None
    vgg = summary(get_model("vgg19"), print_table=False).total_macs if heavy else None
    plain_closed, vgg_closed = resnet_closed_form(34, shortcuts=False), vgg_closed_form("E")
    rows.append(cost_row("plain 34-layer net, G mult-adds: '3.6 billion FLOPs'", 3.6, plain_closed, plain, "G",
                         rounding=billions(1)))
    rows.append(cost_row("VGG-19, G mult-adds: '19.6 billion FLOPs'", 19.6, vgg_closed, vgg, "G",
                         rounding=billions(1)))
    rows.append(cost_row("plain-34 / VGG-19: '18%'", 18, round(100 * plain_closed / vgg_closed), None, "%",
                         rounding=round))
    return Outcome(measured=f"every 3x3 conv of stages 1-4 of resnet34: {rows[0]['summary']:,} mult-adds; "
                            f"ResNet-50 {resnet_closed_form(50) / 1e9:.2f}G (paper's stride), "
                            f"{resnet_closed_form(50, False) / 1e9:.2f}G (v1.5)", verdict=cost_verdict(rows, holds),
                   rows=rows)


# Every claim ends so, its Outcome then its Claim record (depthwise_separable.py's have the same line shapes):
# declarations of different sentences and numbers; what cost claims share is in core.py (cost_row, cost_verdict).
CLAIM = Claim(
    name="resnet_stage_cost",
    statement="If the feature map size is halved, the number of filters is doubled so as to preserve the time "
              "complexity per layer; the 34-layer net has 3.6 billion FLOPs (multiply-adds), 18% of VGG-19's 19.6 "
              "billion, and Table 1 gives 1.8, 3.6, 3.8, 7.6 and 11.3 billion for ResNet-18 to 152.",
    source="He et al. 2016, Deep Residual Learning, Sec. 3.3 and Table 1",
    kind="cost",
    experiment="sn.summary's multiply-adds of every 3x3 conv of resnet34 per stage (56x56x64 ... 7x7x512), and of "
               "ResNet-18 ... 152 at 224x224 (18/34 with option A shortcuts as Sec. 4.1 compares them; 50/101/152 "
               "with projections and the paper's stride on the first 1x1, stride_in_1x1=True, and torchvision's on "
               "the 3x3), plain34 and VGG-19, beside closed forms from Table 1.",
    expected="one multiply-add count for every 3x3 conv in all four stages; Table 1's FLOPs; 3.6G, 19.6G, 18%",
    rule="holds when every 3x3 conv of the four stages costs the same; exact when every count also equals its closed "
         "form and the paper's numbers to their printed digits",
    measure=measure,
)
