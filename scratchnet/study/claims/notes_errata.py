"""Sizes the study notes state, checked on the built nets: AlexNet's conv5 and fc6, VGG-16's layer counts."""
from ...models import get_model
from ...nn import Conv2d, Linear
from ...summary import summary
from .core import Claim, Outcome, cost_row, cost_verdict, erratum


def measure(context):
    alexnet = get_model("alexnet")
    convs = [m for m in alexnet.features if isinstance(m, Conv2d)]
    conv5, fc6 = convs[4], alexnet.classifier[0]
    shapes = summary(alexnet, print_table=False)
    pool5 = [r for r in shapes.layers if r.type == "MaxPool2d"][-1].output_shape
    # the layer counts do not depend on the widths: --tiny counts them on a narrow VGG-16 (138M weights less to draw)
    vgg16 = get_model("vgg16", **(dict(width=1 / 64, hidden=8) if context.size == "tiny" else {}))
    vgg_convs = sum(isinstance(m, Conv2d) for m in vgg16.modules())
    vgg_fcs = sum(isinstance(m, Linear) for m in vgg16.modules())
    rows = [cost_row("AlexNet conv5: kernel size (Sec. 3.5: '256 kernels of size 3 x 3 x 192')", 3, 3,
                     conv5.kernel_size[0], rounding=int),
            cost_row("AlexNet conv5: input maps per kernel (the two-GPU split)", 192, 384 // 2, conv5.weight.shape[1],
                     rounding=int),
            cost_row("AlexNet conv5: kernels", 256, 256, conv5.out_channels, rounding=int),
            cost_row("AlexNet: side of the map fc6 reads (pool5's output)", 6, (13 - 3) // 2 + 1, pool5[-1],
                     rounding=int),
            cost_row("AlexNet fc6: inputs (256 x 6 x 6)", 9216, 256 * 6 * 6, fc6.in_features, rounding=int),
            cost_row("VGG-16 (configuration D): convolutional layers", 13, 2 + 2 + 3 + 3 + 3, vgg_convs, rounding=int),
            cost_row("VGG-16: weight layers (13 conv + 3 fully connected)", 16, 13 + 3, vgg_convs + vgg_fcs,
                     rounding=int)]
    errata = [erratum("AlexNet's conv5 kernels and the map fc6 reads (the notes give other sizes)",
                      "Krizhevsky et al. 2012, Sec. 3.5 and Fig. 2",
                      f"conv5: {conv5.out_channels} kernels of {conv5.kernel_size[0]}x{conv5.kernel_size[1]}x"
                      f"{conv5.weight.shape[1]}; fc6 reads {pool5[1]}x{pool5[2]}x{pool5[3]} = {fc6.in_features} values",
                      "python -m scratchnet.summary alexnet"),
              erratum("VGG-16's convolutional layers (the notes count 16)", "Simonyan & Zisserman 2015, Table 1 (D)",
                      f"{vgg_convs} convolutions and {vgg_fcs} fully connected layers: 16 weight layers",
                      "python -m scratchnet.summary vgg16")]
    return Outcome(measured=f"AlexNet conv5 {conv5.kernel_size[0]}x{conv5.kernel_size[1]}, fc6 reads "
                            f"{pool5[2]}x{pool5[3]}x{pool5[1]}; VGG-16 {vgg_convs} conv + {vgg_fcs} FC",
                   verdict=cost_verdict(rows), rows=rows, errata=errata)


CLAIM = Claim(
    name="notes_errata",
    statement="AlexNet's fifth convolutional layer has 256 kernels of size 3x3x192 and the first fully connected "
              "layer reads its 6x6x256 pooled maps; VGG-16 is 13 convolutional and 3 fully connected layers.",
    source="Krizhevsky et al. 2012, Sec. 3.5 and Fig. 2; Simonyan & Zisserman 2015, Table 1",
    kind="erratum",
    experiment="The layers of the built alexnet (two-GPU split) and vgg16, and the map sizes sn.summary records, "
               "beside the sizes worked out from the papers' tables.",
    expected="conv5 3x3x192 (x256), fc6 on 6x6x256 = 9216 values; VGG-16 13 conv + 3 FC",
    rule="exact when the built nets have the papers' sizes",
    measure=measure,
)
