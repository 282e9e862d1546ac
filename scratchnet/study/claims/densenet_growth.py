"""DenseNet Sec. 3 and Table 2: narrow layers (growth rate k) make DenseNet-BC parameter-efficient."""
from ...models import get_model
from ...models.densenet import BN_SIZE, CIFAR_BC_CONFIGS, cifar_densenet_bc
from ...summary import summary
from .core import Claim, Outcome, cost_row, cost_verdict, millions

TABLE_2_MILLIONS = {100: 0.8, 250: 15.3, 190: 25.6}


def closed_form(depth, k, classes=10, in_channels=3):
    """Parameters of the CIFAR DenseNet-BC (L = depth, growth rate k): a 3x3 stem of 2k maps; three blocks of
    (L - 4) / 6 layers, BN-1x1 conv (4k)-BN-3x3 conv (k); transitions BN-1x1 conv halving the maps; BN, fc."""
    layers, channels = (depth - 4) // 6, 2 * k
    total = in_channels * 9 * channels
    for block in range(3):
        for i in range(layers):
            c_in = channels + i * k
            total += 2 * c_in + c_in * BN_SIZE * k + 2 * BN_SIZE * k + BN_SIZE * k * 9 * k
        channels += layers * k
        if block < 2:
            total += 2 * channels + channels * (channels // 2)
            channels //= 2
    return total + 2 * channels + channels * classes + classes


def preact_bottleneck_closed_form(depth, widths=(16, 32, 64), classes=10, in_channels=3):
    """Parameters of the pre-activation bottleneck ResNet (9n+2 layers): per unit BN-1x1-BN-3x3-BN-1x1 (x4), a
    1x1 projection where a stage starts, the 3x3 stem, the final BN and the fc."""
    n, inplanes = (depth - 2) // 9, widths[0]
    total = 9 * in_channels * widths[0]
    for planes in widths:
        for unit in range(n):
            total += 2 * inplanes + inplanes * planes  # BN-ReLU-1x1
            total += 2 * planes + 9 * planes * planes + 2 * planes + planes * 4 * planes  # BN-ReLU-3x3, BN-ReLU-1x1
            total += inplanes * 4 * planes if unit == 0 else 0
            inplanes = 4 * planes
    return total + 2 * inplanes + inplanes * classes + classes


def measure(context):
    heavy = context.size != "tiny"  # the L=250 and L=190 nets: 5.5 and 9.4 GMAC forwards at 32x32
    rows = []
    for depth, k in CIFAR_BC_CONFIGS.items():
        counted = None
        if heavy or depth == 100:
            counted = summary(get_model(f"densenet_bc_{depth}"), print_table=False).total_params
        rows.append(cost_row(f"DenseNet-BC (L={depth}, k={k}), M parameters", TABLE_2_MILLIONS[depth],
                             closed_form(depth, k), counted, "M", rounding=millions(1)))
    growth = {k: closed_form(100, k) for k in (12, 24, 36, 48)}
    for k, params in growth.items():
        counted = summary(cifar_densenet_bc(100, growth_rate=k), print_table=False).total_params if heavy else None
        rows.append(cost_row(f"L=100 with growth rate k={k}, parameters", None, params, counted))
    resnet = get_model("preact_resnet1001")
    counted = summary(resnet, print_table=False).total_params if heavy else None
    rows.append(cost_row("pre-activation ResNet-1001 (He et al. 2016, Table 3), M parameters", 10.2,
                         preact_bottleneck_closed_form(1001), counted, "M", rounding=millions(1)))
    ratio = resnet.num_parameters() / rows[0]["closed_form"]
    holds = rows[0]["closed_form"] < 1e6 and ratio > 10
    return Outcome(measured=f"L=100, k=12: {rows[0]['closed_form']:,} parameters, {ratio:.1f}x fewer than ResNet-1001; "
                            f"doubling k from 12 to 24 multiplies them by {growth[24] / growth[12]:.2f}",
                   verdict=cost_verdict(rows, holds), rows=rows,
                   notes="The pre-activation ResNet-1001 counts 10,327,706 parameters with BN's scale and shift, "
                         "10,178,522 without them: Table 3's 10.2M leaves BN out.")


CLAIM = Claim(
    name="densenet_growth",
    statement="DenseNet-BC (L=100, k=12) has 0.8M parameters (Table 2) and reaches the accuracy of the 1001-layer "
              "pre-activation ResNet with its 10.2M: each layer adds only k feature maps, so the nets stay narrow.",
    source="Huang et al. 2017, Densely Connected Convolutional Networks, Sec. 3, Sec. 4.3 and Table 2",
    kind="cost",
    experiment="sn.summary's parameter count of the CIFAR DenseNet-BC nets of Table 2 (densenet_bc_100/250/190) "
               "beside the closed form in L and k; the count at L=100 for k = 12 ... 48; the pre-activation "
               "ResNet-1001's count.",
    expected="0.8M, 15.3M, 25.6M (Table 2); parameters growing about as k^2; ResNet-1001 10.2M",
    rule="holds when DenseNet-BC (100, 12) has under 1M parameters and more than 10x fewer than ResNet-1001; exact "
         "when every count also equals its closed form and the papers' numbers to their printed digits",
    measure=measure,
)
