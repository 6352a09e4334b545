"""The memory planner: predict a step's peak memory, pick the batch size that fits, say what cuts it.

The design notes (Géron, ch. 14) put it this way: at inference a layer's memory can be released as
soon as the next layer is computed, so only two consecutive layers must be held, but training keeps
everything the forward pass computed for the backward pass; the cures for an out-of-memory error are
a smaller batch, a stride, or fewer layers. The planner computes those figures for any model by
tracing one real step on fake tensors (:mod:`cnnkit.memory.trace`), then tries the cures: half the
batch, bf16 autocast, gradient checkpointing of the largest stages (Chen et al. 2016, "Training Deep
Nets with Sublinear Memory Cost", via ``torch.utils.checkpoint``) and a stride of 2 in the first layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from cnnkit.memory.report import LayerRow, MemoryReport, Suggestion
from cnnkit.memory.trace import OptimizerFactory, StepTrace, trace_step
from cnnkit.train.optim import OPTIMIZERS

MODES = ("train", "inference")

# The trainer's optimizers, exactly (cnnkit.train.optim owns them): optimizer state per weight is one
# buffer for SGD with momentum and RMSprop, two for the Adam family.

AUTOCAST_DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def _optimizer_factory(
    optimizer: str | OptimizerFactory | None, device_type: str
) -> tuple[str, OptimizerFactory | None]:
    if optimizer is None or optimizer == "none":
        return "none", None
    if callable(optimizer):
        return getattr(optimizer, "__name__", type(optimizer).__name__), optimizer
    try:
        cls, kwargs = OPTIMIZERS[optimizer]
    except KeyError:
        raise ValueError(
            f"optimizer: expected one of none, {', '.join(OPTIMIZERS)} or a callable "
            f"params -> torch.optim.Optimizer, got {optimizer!r}"
        ) from None
    # PyTorch's optimizers run their multi-tensor ("foreach") kernels by default on CUDA only; those
    # hold temporaries the size of all the weights at once, so the trace must take the same path.
    foreach = device_type == "cuda"
    make: Callable[..., torch.optim.Optimizer] = cls
    return optimizer, lambda params: make(params, foreach=foreach, **kwargs)


def _check_args(input_shape: tuple[int, ...], batch_size: int, mode: str) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(
            f"input_shape: expected three positive ints (C, H, W), got {input_shape!r}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    return shape


def _autocast_dtype(dtype: torch.dtype) -> torch.dtype | None:
    if dtype == torch.float32:
        return None
    if dtype not in AUTOCAST_DTYPES:
        raise ValueError(f"dtype: expected torch.float32, bfloat16 or float16, got {dtype}")
    return dtype


def _param_counts(module: nn.Module, recurse: bool = True) -> tuple[int, int]:
    """(trainable, non-trainable) as Keras counts them: BatchNorm's moving statistics are
    non-trainable parameters; integer buffers (``num_batches_tracked``) are not parameters."""
    trainable = sum(p.numel() for p in module.parameters(recurse) if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters(recurse) if not p.requires_grad)
    frozen += sum(b.numel() for b in module.buffers(recurse) if b.is_floating_point())
    return trainable, frozen


def _layer_rows(model: nn.Module, trace: StepTrace) -> list[LayerRow]:
    rows: list[tuple[float, LayerRow]] = []
    for name, module in model.named_modules():
        row = trace.rows[name]
        leaf = next(module.children(), None) is None
        trainable, frozen = _param_counts(module, recurse=False)
        called = row.order >= 0
        if isinstance(module, nn.Identity):
            continue  # a placeholder (no activation, no normalization), not a layer
        if not ((called and (leaf or row.own_ops)) or trainable or frozen):
            continue
        rows.append(
            (
                row.order if called else float("inf"),
                LayerRow(
                    name=name,
                    type=row.type,
                    output_shape=row.output_shape if called else None,
                    trainable_params=trainable,
                    non_trainable_params=frozen,
                    flops=row.flops,
                    saved_bytes=row.saved_bytes,
                    output_bytes=row.output_bytes,
                ),
            )
        )
    loss = trace.rows["(loss)"]
    if loss.saved_bytes:
        rows.append(
            (float("inf"), LayerRow("(loss)", "cross_entropy", None, 0, 0, 0, loss.saved_bytes))
        )
    rows.sort(key=lambda r: r[0])
    return [r for _, r in rows]


def _trace(
    model: nn.Module,
    shape: tuple[int, int, int],
    batch_size: int,
    train: bool,
    factory: OptimizerFactory | None,
    device_type: str,
    **options,
) -> StepTrace:
    """``trace_step``, but an input the model rejects raises the model's own error.

    Fake tensors check shapes with their own messages ("a and b must have same reduction dim"); the
    user should see what their model says on a real input ("mat1 and mat2 shapes cannot be
    multiplied"), so on failure one real image goes through the model in eval mode.
    """
    try:
        return trace_step(
            model,
            shape,
            batch_size,
            train=train,
            optimizer=factory,
            device_type=device_type,
            **options,
        )
    except Exception as fake_error:
        if options.get("edit") is not None or options.get("checkpoint_stages"):
            raise  # a what-if change, not the user's input, was rejected
        _raise_real_error(model, shape)
        raise RuntimeError(
            f"cnnkit.memory could not trace {type(model).__name__} on fake tensors ({fake_error}); "
            "the model runs on a real input, so it likely branches on tensor values"
        ) from fake_error


def _raise_real_error(model: nn.Module, shape: tuple[int, int, int]) -> None:
    modes = {m: m.training for m in model.modules()}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=device))
    finally:
        for m, training in modes.items():
            m.training = training


def estimate(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    batch_size: int,
    mode: str = "train",
    optimizer: str | OptimizerFactory | None = "sgd",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    suggestions: bool = True,
) -> MemoryReport:
    """Predict the memory and compute of one training step (``mode="train"``) or inference pass.

    ``input_shape`` is one image, (C, H, W). ``optimizer`` is ``"none"``, one of :data:`OPTIMIZERS`
    or a callable ``params -> Optimizer`` (pass the trainer's own factory to plan exactly its step).
    ``dtype=torch.bfloat16`` (or ``float16``) plans an autocast step with fp32 weights, as cnnkit's
    trainer runs; ``device`` picks the optimizer's kernels and, for CUDA, the allocator's 512-byte
    rounding. The model is not changed and no real memory is allocated. An input the model rejects
    raises the model's own error.
    """
    shape = _check_args(input_shape, batch_size, mode)
    device_type = torch.device(device).type
    cast = _autocast_dtype(dtype)
    opt_name, factory = _optimizer_factory(optimizer, device_type)

    def run(batch: int, **what_if) -> StepTrace:
        what_if.setdefault("autocast_dtype", cast)
        return _trace(model, shape, batch, mode == "train", factory, device_type, **what_if)

    inference = _trace(model, shape, batch_size, False, None, device_type, autocast_dtype=cast)
    step = run(batch_size) if mode == "train" else inference
    trainable, frozen = _param_counts(model)
    report = MemoryReport(
        model=type(model).__name__,
        input_shape=shape,
        batch_size=batch_size,
        mode=mode,
        optimizer=opt_name if mode == "train" else "none",
        precision=AUTOCAST_DTYPES.get(dtype, "fp32"),
        device=str(device),
        trainable_params=trainable,
        non_trainable_params=frozen,
        param_bytes=step.param_bytes,
        buffer_bytes=step.buffer_bytes,
        grad_bytes=step.grad_bytes,
        optimizer_bytes=step.optimizer_bytes,
        input_bytes=step.input_bytes,
        activation_bytes=step.saved_bytes,
        inference_peak_bytes=inference.peak_bytes,
        inference_activation_bytes=inference.activation_peak_bytes + inference.input_bytes,
        peak_bytes=step.peak_bytes,
        peak_phase=step.peak_phase,
        peak_layer=step.peak_layer,
        flops=inference.flops // batch_size,
        layers=_layer_rows(model, step),
    )
    if suggestions:
        report.suggestions = _suggestions(model, report, step, run)
    return report


def _stages(model: nn.Module) -> list[str]:
    """The model's stages: its direct children, a container child split into its own children."""
    names = []
    for name, child in model.named_children():
        grandchildren = [n for n, _ in child.named_children()]
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(grandchildren) >= 2:
            names += [f"{name}.{n}" for n in grandchildren]
        else:
            names.append(name)
    return names


def _first_conv_stride(model: nn.Module) -> tuple[str, Callable[[nn.Module], None]] | None:
    first = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        return None

    def edit(fake: nn.Module) -> None:
        conv = fake.get_submodule(first)
        assert isinstance(conv, nn.Conv2d)
        if isinstance(conv.padding, str):  # 'same' is not allowed with a stride: pad k // 2
            conv.padding = tuple(
                d * (k // 2) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)
            )
            conv._reversed_padding_repeated_twice = [p for p in conv.padding[::-1] for _ in (0, 1)]
        conv.stride = (2 * conv.stride[0], 2 * conv.stride[1])

    return first, edit


def _suggestions(
    model: nn.Module, report: MemoryReport, step: StepTrace, run: Callable[..., StepTrace]
) -> list[Suggestion]:
    out: list[Suggestion] = []

    def add(change: str, make: Callable[[], StepTrace]) -> None:
        try:
            peak = make().peak_bytes
        except Exception as exc:  # a what-if the model rejects is reported, not raised
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            out.append(Suggestion(change, None, 0, f"the model rejects it: {reason[:160]}"))
            return
        out.append(Suggestion(change, peak, report.peak_bytes - peak))

    if report.batch_size > 1:
        half = report.batch_size // 2
        add(f"batch {report.batch_size} -> {half}", lambda: run(half))
    if report.precision == "fp32":
        add("bf16 autocast", lambda: run(report.batch_size, autocast_dtype=torch.bfloat16))
    if report.mode == "train" and step.saved_bytes:
        saved = {
            stage: sum(
                r.saved_bytes
                for r in report.layers
                if r.name == stage or r.name.startswith(stage + ".")
            )
            for stage in _stages(model)
        }
        largest = [
            s
            for s, b in sorted(saved.items(), key=lambda kv: -kv[1])
            if b >= 0.1 * step.saved_bytes
        ]
        if largest:
            add(
                f"gradient checkpointing of {', '.join(largest)}",
                lambda: run(report.batch_size, checkpoint_stages=tuple(largest)),
            )
    stride = _first_conv_stride(model)
    if stride is not None:
        layer, edit = stride
        add(f"stride 2 in the first layer ({layer})", lambda: run(report.batch_size, edit=edit))
    out.sort(key=lambda s: -s.saving_bytes if s.peak_bytes is not None else float("inf"))
    return out


def free_memory(device: str | torch.device = "cpu") -> int:
    """Bytes free on ``device``: CUDA's ``mem_get_info``, else the kernel's MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def max_batch_size(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    budget_bytes: int | None = None,
    mode: str = "train",
    optimizer: str | OptimizerFactory | None = "sgd",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    limit: int = 65536,
) -> int:
    """The largest batch whose predicted peak fits ``budget_bytes`` (default: the device's free
    memory), at most ``limit``; 0 if not even one image fits.

    The peak grows almost linearly with the batch, so two traces (batch 1 and 2) give a first guess
    and a short bisection on traced peaks makes it exact.
    """
    shape = _check_args(input_shape, 1, mode)
    budget = free_memory(device) if budget_bytes is None else int(budget_bytes)
    peaks: dict[int, int] = {}

    device_type = torch.device(device).type
    cast = _autocast_dtype(dtype)
    _, factory = _optimizer_factory(optimizer, device_type)

    def fits(batch: int) -> bool:
        if batch not in peaks:
            trace = _trace(
                model, shape, batch, mode == "train", factory, device_type, autocast_dtype=cast
            )
            peaks[batch] = trace.peak_bytes
        return peaks[batch] <= budget

    if not fits(1):
        return 0
    # Secant steps on the (nearly linear) peak(batch), then a bisection between a batch that fits
    # (lo) and one that does not (hi).
    lo, hi, batch = 1, limit + 1, 2
    for _ in range(4):
        if fits(batch):
            lo = max(lo, batch)
        else:
            hi = min(hi, batch)
        slope = max(1.0, (peaks[batch] - peaks[1]) / (batch - 1))
        guess = int(min(limit, max(2, 1 + (budget - peaks[1]) // slope)))
        if guess in peaks or hi - lo <= 1:
            break
        batch = guess
    step = max(1, lo // 32)
    while hi > limit and lo < limit:  # nothing failed yet: look above lo
        batch = min(limit, lo + step)
        if fits(batch):
            lo, step = batch, step * 2
        else:
            hi = batch
    hi = min(hi, limit + 1)
    if lo + 1 < hi and lo + 1 <= limit and not fits(lo + 1):
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo
