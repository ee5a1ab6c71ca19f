"""Model families, sources and loading."""

from rim.models.adapters import ADAPTERS, FamilyAdapter, adapter_for
from rim.models.loading import LoadedModel, load_model, prepare_model, read_reference, resolve_device

__all__ = [
    "ADAPTERS",
    "FamilyAdapter",
    "LoadedModel",
    "adapter_for",
    "load_model",
    "prepare_model",
    "read_reference",
    "resolve_device",
]
