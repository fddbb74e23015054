"""Building blocks of the model zoo, one interaction idea per file."""

from diet_ray.layers.attention import SelfAttention
from diet_ray.layers.bilinear import BILINEAR_KINDS, BilinearInteraction
from diet_ray.layers.cin import CIN
from diet_ray.layers.cross import CrossNet, CrossNetV2
from diet_ray.layers.embedding import (
    DenseEmbedding,
    FeatureEmbedding,
    LinearTerm,
    SoftEmbedding,
)
from diet_ray.layers.fm import FMInteraction, fm_interaction
from diet_ray.layers.mlp import MLP
from diet_ray.layers.senet import SqueezeExcitation

__all__ = [
    "BILINEAR_KINDS",
    "CIN",
    "MLP",
    "BilinearInteraction",
    "CrossNet",
    "CrossNetV2",
    "DenseEmbedding",
    "FMInteraction",
    "FeatureEmbedding",
    "LinearTerm",
    "SelfAttention",
    "SoftEmbedding",
    "SqueezeExcitation",
    "fm_interaction",
]
