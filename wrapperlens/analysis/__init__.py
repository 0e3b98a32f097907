"""Analysis through TransformerLens hooks; task-agnostic (a model plus batches and label/metric functions)."""

from wrapperlens.analysis import positions  # noqa: F401
from wrapperlens.analysis import pruning  # noqa: F401
