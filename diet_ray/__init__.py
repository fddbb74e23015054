"""diet-ray: streaming dataset distillation for recommender systems, on Ray.

The distillation job itself is `diet_ray.pipeline.distill(config)` (it imports Ray).
"""

from diet_ray.config import DistillConfig, load_config
from diet_ray.data.batch import SparseBatch, collate
from diet_ray.data.errors import DataError
from diet_ray.data.schema import Schema
from diet_ray.models import MODELS, build_model

__all__ = [
    "MODELS",
    "DataError",
    "DistillConfig",
    "Schema",
    "SparseBatch",
    "build_model",
    "collate",
    "load_config",
]
__version__ = "0.1.0"
