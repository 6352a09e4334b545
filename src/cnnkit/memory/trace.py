"""Run one step of a model on fake tensors and record every byte it allocates, holds and frees.

No real memory is used and no arithmetic is done: a ``FakeTensorMode`` copy of the model (PyTorch's
own shape-only tensors, the ones ``torch.compile`` traces with) runs the real Python code of the
model, of autograd and of the optimizer, so branches, skip connections, in-place operations, views
and what autograd keeps are exactly those of a real step. A ``TorchDispatchMode`` sees every
operation and the storage of each tensor it returns; a weak reference on each storage tells when it
is freed. That gives the live bytes after every operation, hence the true peak of any model, and
``torch.autograd.graph.saved_tensors_hooks`` gives what autograd saves for backward, per layer,
deduplicated by storage. What no trace sees: memory a kernel allocates and frees inside itself (oneDNN
scratchpads, cuDNN workspaces) and the allocator's own overhead; ``benchmarks/memory_accuracy.py``
measures how much that is.

References: PyTorch's ``torch.distributed._tools.mem_tracker.MemTracker`` tracks storages the same
way; FLOPs come from the formulas of ``torch.utils.flop_counter`` (2 FLOPs per multiply-add).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import flop_registry

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


@dataclass
class _Row:
    type: str
    order: int = -1  # start order of the first call; -1: never called
    output_shape: Any = None
    flops: int = 0
    saved_bytes: int = 0
    output_bytes: int = 0
    own_ops: bool = False


@dataclass
class StepTrace:
    """What one traced step held. Byte counts at the traced batch; ``flops`` for the whole batch."""

    peak_bytes: int = 0  # everything live at the peak, parameters included
    peak_phase: str = ""
    peak_layer: str = ""
    param_bytes: int = 0
    buffer_bytes: int = 0
    grad_bytes: int = 0
    optimizer_bytes: int = 0
    input_bytes: int = 0
    saved_bytes: int = 0  # activations saved for backward, distinct storages
    activation_peak_bytes: int = 0  # live bytes at the peak beyond parameters, buffers and input
    flops: int = 0
    rows: dict[str, _Row] = field(default_factory=dict)


class _Tracer(TorchDispatchMode):
    """Counts the live bytes of every storage an operation returns until that storage is freed."""

    def __init__(self, rows: dict[str, _Row], round_to: int = 1) -> None:
        super().__init__()
        self.rows = rows
        self.round_to = round_to  # CUDA's caching allocator rounds every block up to 512 bytes
        self.live: dict[int, weakref.ref] = {}
        self.live_bytes = 0
        self.peak_bytes = 0
        self.peak_where = ("", "")
        self.phase = "setup"
        self.stack: list[str] = []
        self.count_flops = False
        self.flops = 0

    def track(self, tensor: torch.Tensor) -> int:
        """Start counting ``tensor``'s storage; returns the bytes it added (0 if already counted)."""
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self.live:
            return 0
        nbytes = -(-storage.nbytes() // self.round_to) * self.round_to

        def freed(_: weakref.ref, key: int = key, nbytes: int = nbytes) -> None:
            if self.live.pop(key, None) is not None:
                self.live_bytes -= nbytes

        self.live[key] = weakref.ref(storage, freed)
        self.live_bytes += nbytes
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes
            self.peak_where = (self.phase, self.stack[-1] if self.stack else "")
        return nbytes

    def reset_peak(self) -> None:
        self.peak_bytes = self.live_bytes
        self.peak_where = (self.phase, "")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        if self.count_flops and self.phase == "forward":
            layer = self.stack[-1] if self.stack else ""
            self.rows[layer].own_ops = True
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                flops = formula(*args, **(kwargs or {}), out_val=out)
                self.flops += flops
                self.rows[layer].flops += flops
        return out


def _shape_of(output: Any) -> Any:
    shapes = [tuple(t.shape) for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
    return shapes[0] if len(shapes) == 1 else shapes


def _default_loss(output: Any) -> torch.Tensor:
    # What the trainer does: cross-entropy on each (N, K) output, auxiliary heads weighted 0.3.
    tensors = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
    losses = []
    for i, t in enumerate(tensors):
        if t.dim() == 2:
            target = torch.zeros(t.shape[0], dtype=torch.long)
            loss = F.cross_entropy(t.float(), target)
        else:
            loss = t.float().mean()
        losses.append(loss if i == 0 else 0.3 * loss)
    return sum(losses[1:], losses[0])


@contextlib.contextmanager
def _layer_hooks(model: nn.Module, tracer: _Tracer) -> Iterator[None]:
    handles = []
    started = [0]

    def enter(name: str, module: nn.Module, args: Any) -> None:
        tracer.stack.append(name)
        row = tracer.rows[name]
        if tracer.phase == "forward" and tracer.count_flops and row.order < 0:
            row.order = started[0]  # rows list layers in the order they start, as Keras does
            started[0] += 1

    def leave(name: str, module: nn.Module, args: Any, output: Any) -> None:
        tracer.stack.pop()
        row = tracer.rows[name]
        if tracer.phase == "forward" and tracer.count_flops:
            row.output_shape = _shape_of(output)
            row.output_bytes = sum(
                t.numel() * t.element_size()
                for t in tree_leaves(output)
                if isinstance(t, torch.Tensor)
            )

    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(functools.partial(enter, name)))
        handles.append(module.register_forward_hook(functools.partial(leave, name)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _checkpointed(module: nn.Module) -> None:
    # torch.utils.checkpoint: keep only the stage's input, recompute the rest during backward.
    forward = module.forward
    module.forward = lambda *args, **kwargs: checkpoint(
        forward, *args, use_reentrant=False, **kwargs
    )


def fake_copy(model: nn.Module, fake_mode: FakeTensorMode) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are fake: no data is copied."""
    with FakeCopyMode(fake_mode):
        return copy.deepcopy(model)


@contextlib.contextmanager
def _quiet_fake_tensor_log() -> Iterator[None]:
    # FakeTensorMode logs every kernel error before raising it; the error itself is enough.
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


def trace_step(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    batch_size: int,
    *,
    train: bool,
    optimizer: OptimizerFactory | None = None,
    autocast_dtype: torch.dtype | None = None,
    device_type: str = "cpu",
    checkpoint_stages: tuple[str, ...] = (),
    edit: Callable[[nn.Module], None] | None = None,
) -> StepTrace:
    """Trace a steady-state training step (``train=True``) or a no-grad forward pass.

    A training step is the trainer's: ``zero_grad(set_to_none=True)``, forward, loss, backward,
    ``optimizer.step()``. Two steps are traced and the second is reported, so optimizer state that
    the first step creates is held throughout, as in every step after the first. ``edit`` changes the
    fake copy before tracing (the planner's "what if" suggestions); the model itself is never touched.
    """
    fake_mode = FakeTensorMode()
    fake = fake_copy(model, fake_mode)
    fake.train(train)
    if edit is not None:
        edit(fake)
    for name in checkpoint_stages:
        _checkpointed(fake.get_submodule(name))

    rows = {name: _Row(type=type(m).__name__) for name, m in fake.named_modules()}
    rows["(loss)"] = _Row(type="loss")
    tracer = _Tracer(rows, round_to=512 if device_type == "cuda" else 1)
    result = StepTrace(rows=rows)
    param_keys: set[int] = set()
    saved_keys: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = id(t.untyped_storage())
        if key not in param_keys and key not in saved_keys:
            saved_keys.add(key)
            nbytes = t.untyped_storage().nbytes()
            result.saved_bytes += nbytes
            layer = tracer.stack[-1] if tracer.stack else "(loss)"
            rows[layer].saved_bytes += nbytes
        return t

    autocast = (
        torch.autocast(device_type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    params = [p for p in fake.parameters() if p.requires_grad]
    opt = optimizer(params) if (train and optimizer is not None) else None

    with _quiet_fake_tensor_log(), tracer, _layer_hooks(fake, tracer):
        for p in fake.parameters():
            result.param_bytes += tracer.track(p)
            param_keys.add(id(p.untyped_storage()))
        for b in fake.buffers():
            result.buffer_bytes += tracer.track(b)
            param_keys.add(id(b.untyped_storage()))
        with fake_mode:
            x = torch.empty(batch_size, *input_shape)
        tracer.track(x)
        result.input_bytes = x.untyped_storage().nbytes()

        for step in range(2 if train else 1):
            last = step == (1 if train else 0)
            if last:
                tracer.reset_peak()
                tracer.count_flops = True
            saved_keys.clear()
            result.saved_bytes = 0
            for row in rows.values():
                row.saved_bytes = 0
            if not train:
                tracer.phase = "forward"
                with torch.no_grad(), fake_mode, autocast:
                    out = fake(x)
                del out
                continue
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            else:
                fake.zero_grad(set_to_none=True)
            tracer.phase = "forward"
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), fake_mode:
                with autocast:
                    out = fake(x)
                tracer.count_flops = False
                loss = _default_loss(out)
                del out
                tracer.phase = "backward"
                loss.backward()
                del loss
            result.grad_bytes = sum(
                p.grad.untyped_storage().nbytes() for p in params if p.grad is not None
            )
            tracer.phase = "optimizer"
            if opt is not None:
                opt.step()
        tracer.count_flops = False

    if opt is not None:
        result.optimizer_bytes = sum(
            t.untyped_storage().nbytes()
            for state in opt.state.values()
            for t in state.values()
            if isinstance(t, FakeTensor)  # the real CPU 'step' counters are not state per weight
        )
    result.peak_bytes = tracer.peak_bytes
    result.peak_phase, result.peak_layer = tracer.peak_where
    result.flops = tracer.flops
    fixed = result.param_bytes + result.buffer_bytes + result.input_bytes
    result.activation_peak_bytes = tracer.peak_bytes - fixed - result.optimizer_bytes
    return result
