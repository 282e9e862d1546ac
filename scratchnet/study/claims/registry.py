"""Every claim, in the order the page lists them: the exact cost claims, the training claims, the errata."""
from . import (augmentation, auxiliary_classifiers, batch_norm, degradation, densenet_growth, depthwise_separable,
               dropout, efficientnet_scaling, googlenet_vs_alexnet, inception_bottlenecks, lenet_rbf_output, lrn,
               notes_errata, overlapping_pooling, preactivation, relu_vs_tanh, resnet_stage_cost, squeeze_excitation,
               vgg_3x3_stacks)

MODULES = (
    # cost, exact
    vgg_3x3_stacks, inception_bottlenecks, depthwise_separable, googlenet_vs_alexnet, resnet_stage_cost,
    densenet_growth, efficientnet_scaling,
    # training, measured
    relu_vs_tanh, lrn, overlapping_pooling, dropout, augmentation, auxiliary_classifiers, degradation, preactivation,
    squeeze_excitation, batch_norm, lenet_rbf_output,
    # the notes' sizes
    notes_errata,
)
CLAIMS = {module.CLAIM.name: module.CLAIM for module in MODULES}


def list_claims():
    """The claims' names, in the page's order."""
    return list(CLAIMS)
