"""diet-ray: streaming dataset distillation for recommender systems, on Ray."""

from diet_ray.data.batch import SparseBatch, collate
from diet_ray.data.errors import DataError
from diet_ray.data.schema import Schema

__all__ = ["DataError", "Schema", "SparseBatch", "collate"]
__version__ = "0.1.0"
