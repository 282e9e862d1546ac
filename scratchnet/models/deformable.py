"""Deformable ConvNets: ResNets whose 3x3 convolutions sample the input at learned offsets.

Dai, Qi, Xiong, Li, Zhang, Hu, Wei, "Deformable Convolutional Networks" (ICCV 2017, arXiv:1703.06211): v1,
learned offsets. Zhu, Hu, Lin, Dai, "Deformable ConvNets v2: More Deformable, Better Results" (CVPR 2019,
arXiv:1811.11168): v2, offsets and a modulation scalar per tap, and deformable layers in more stages.

Each deformable layer is a ``DeformConv2dPack`` (v1) or ``ModulatedDeformConv2dPack`` (v2) (scratchnet.nn):
the 3x3 convolution it replaces (same weight shape, stride, padding, no bias), plus ``conv_offset``, a 3x3
convolution over the same input giving 2 (v1) or 3 (v2) values per tap (18 or 27 channels), initialised to
zero, so a new net computes exactly its regular twin (v1) or its twin with every deformable layer's output
halved (v2's modulation starts at sigmoid(0) = 0.5). State_dict keys are torchvision's ResNet keys plus
``layerN.M.conv2.conv_offset.weight/.bias`` (mmdetection's names for the same nets).

ResNet-50 (He et al.'s Table 1) with every 3x3 convolution of conv3-conv5 deformable: DCNv2's setting
(Sec. 3.1: "deformable convolutions are applied in all the 3x3 conv layers in stages conv3, conv4, and
conv5"; mmdetection's "dconv(c3-c5)" / "mdconv(c3-c5)")::

    stage  torchvision  output   bottleneck units                     3x3 convolution
    conv2  layer1       56x56    [1x1, 64   3x3, 64   1x1, 256 ] x3   regular
    conv3  layer2       28x28    [1x1, 128  3x3, 128  1x1, 512 ] x4   deformable (stride 2 in the first)
    conv4  layer3       14x14    [1x1, 256  3x3, 256  1x1, 1024] x6   deformable
    conv5  layer4        7x7     [1x1, 512  3x3, 512  1x1, 2048] x3   deformable

13 deformable layers (the v2 paper counts twelve). ``resnet50_dcn`` has v1's layers, ``resnet50_dcnv2``
v2's; the parameters are resnet50's 25,557,032 plus 162 * width + 18 (v1) or 243 * width + 27 (v2) per
deformable layer. DCNv1 itself used three deformable layers, the last three 3x3 convolutions of
ResNet-101's conv5 (its Table 1 compares 1, 2, 3 and 6): ``deformable_stages=(False, False, False, True)``
on resnet50_dcn is the closest net here (conv5's three).

CIFAR size: ``resnet20_dcn`` / ``resnet20_dcnv2`` are He et al.'s 20-layer CIFAR net (Sec. 4.2) with the
six 3x3 convolutions of its last stage (8x8 maps, 64 channels) deformable: trainable on a CPU.

Training, as the papers do it: the offset (and modulation) branches learn at beta times the base
learning rate, beta = 1 in v1 (0.01 only for the fc layer of deformable RoI pooling) and 0.1 in v2; give
``conv_offset`` parameters their own parameter group (docs/models.md shows how).
"""
from functools import partial

from ..nn import DeformConv2dPack, ModulatedDeformConv2dPack
from .registry import IMAGENET_SHAPED, register_model
from .resnet import CIFAR_RECIPE, cifar_resnet, imagenet_resnet

VERSIONS = {"v1": DeformConv2dPack, "v2": ModulatedDeformConv2dPack}
DCN_STAGES = (False, True, True, True)  # conv3-conv5 (ImageNet ResNets)
CIFAR_DCN_STAGES = (False, False, True)  # the last stage (CIFAR ResNets)


def deform_conv3x3(in_planes, out_planes, stride=1, version="v1", offset_groups=1):
    """The deformable twin of resnet.conv3x3: 3x3, padding 1, no bias, predicting its own offsets."""
    return VERSIONS[version](in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False,
                             offset_groups=offset_groups)


def stage_convs(version, deformable_stages, offset_groups=1):
    """ResNet's ``stage_conv3x3``: the deformable 3x3 conv where a stage is marked True, the regular one elsewhere."""
    if version not in VERSIONS:
        raise ValueError(f"deformable version must be one of {tuple(VERSIONS)}, got {version!r}")
    layer = partial(deform_conv3x3, version=version, offset_groups=offset_groups)
    return tuple(layer if deformable else None for deformable in deformable_stages)


def dcn_resnet(depth, version, num_classes=1000, deformable_stages=DCN_STAGES, offset_groups=1, **options):
    """ResNet-``depth`` of Table 1 with the 3x3 convolutions of the marked stages deformable."""
    return imagenet_resnet(depth, num_classes, stage_conv3x3=stage_convs(version, deformable_stages, offset_groups),
                           **options)


def dcn_cifar_resnet(depth, version, num_classes=10, deformable_stages=CIFAR_DCN_STAGES, offset_groups=1,
                     **options):
    """The 6n+2-layer CIFAR ResNet with the 3x3 convolutions of the marked stages deformable."""
    return cifar_resnet(depth, num_classes, stage_conv3x3=stage_convs(version, deformable_stages, offset_groups),
                        **options)


@register_model("resnet50_dcn", recipe=IMAGENET_SHAPED)
def resnet50_dcn(num_classes=1000, **options):
    return dcn_resnet(50, "v1", num_classes, **options)


@register_model("resnet50_dcnv2", recipe=IMAGENET_SHAPED)
def resnet50_dcnv2(num_classes=1000, **options):
    return dcn_resnet(50, "v2", num_classes, **options)


@register_model("resnet20_dcn", recipe=CIFAR_RECIPE)
def resnet20_dcn(num_classes=10, **options):
    return dcn_cifar_resnet(20, "v1", num_classes, **options)


@register_model("resnet20_dcnv2", recipe=CIFAR_RECIPE)
def resnet20_dcnv2(num_classes=10, **options):
    return dcn_cifar_resnet(20, "v2", num_classes, **options)
