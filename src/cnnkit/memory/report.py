"""What the planner reports: one row per layer, the suggestions, and the whole step's figures."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LayerRow:
    """One layer of the summary table (a leaf module, or a container with operations of its own).

    ``saved_bytes`` are the activations autograd keeps for the backward pass that this layer saved
    first (a tensor saved by two layers, such as a ReLU output that the next convolution also saves,
    counts once, for the first); ``output_bytes`` is the size of what the layer returns. Both at the
    traced batch size; ``flops`` are per image.
    """

    name: str  # module path, e.g. "layer1.0.conv1"; "" is the model itself
    type: str  # the module's class name
    output_shape: tuple[int, ...] | list[tuple[int, ...]] | None  # None: not called in this mode
    trainable_params: int
    non_trainable_params: int  # frozen parameters and floating-point buffers, as Keras counts them
    flops: int = 0
    saved_bytes: int = 0
    output_bytes: int = 0


@dataclass
class Suggestion:
    """A change that would lower the peak, with the traced peak after the change."""

    change: str  # e.g. "batch 16 -> 8"
    peak_bytes: int | None  # None: the model does not accept the change (see ``note``)
    saving_bytes: int
    note: str = ""


@dataclass
class MemoryReport:
    """Memory and compute of one training step or one inference pass, at a batch size.

    All byte counts are at ``batch_size``. ``peak_bytes`` is the predicted peak of everything the step
    holds: parameters, buffers, gradients, optimizer state, the input batch and the activations.
    """

    model: str
    input_shape: tuple[int, int, int]
    batch_size: int
    mode: str  # "train" or "inference"
    optimizer: str
    precision: str  # "fp32", or "bf16"/"fp16" autocast with fp32 parameters
    device: str
    trainable_params: int
    non_trainable_params: int
    param_bytes: int
    buffer_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    input_bytes: int
    activation_bytes: int  # saved for backward, deduplicated by storage (0 at inference)
    inference_peak_bytes: (
        int  # parameters + buffers + the live-activation peak of a no-grad forward
    )
    inference_activation_bytes: int  # that live peak alone: the input and the notes' "two layers"
    peak_bytes: int
    peak_phase: str  # "forward", "backward" or "optimizer" ("forward" at inference)
    peak_layer: str  # the layer running when the peak was reached ("" when not in a layer)
    flops: int  # forward FLOPs per image in eval mode (2 per multiply-add)
    layers: list[LayerRow] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)

    def fits(self, budget_bytes: int) -> bool:
        return self.peak_bytes <= budget_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (tuples become lists), ready for ``json.dumps``."""

        def plain(value: Any) -> Any:
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value

        return plain(dataclasses.asdict(self))
