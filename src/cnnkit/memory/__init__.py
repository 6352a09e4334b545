"""Memory and compute planning: what a step holds, the batch size that fits, what would cut it.

>>> report = estimate(model, (3, 224, 224), batch_size=32, mode="train", optimizer="adam")
>>> report.peak_bytes, report.activation_bytes, report.flops
>>> max_batch_size(model, (3, 224, 224), budget_bytes=2 * 2**30)
"""

from cnnkit.memory.planner import OPTIMIZERS, estimate, free_memory, max_batch_size
from cnnkit.memory.report import LayerRow, MemoryReport, Suggestion

__all__ = [
    "OPTIMIZERS",
    "LayerRow",
    "MemoryReport",
    "Suggestion",
    "estimate",
    "free_memory",
    "max_batch_size",
]
