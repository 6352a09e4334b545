"""From dense to convolution: a classifier becomes a fully convolutional network (FCN) that slides
over images larger than those it was trained on, in one pass (Géron, ch. 14, "Fully Convolutional
Networks"; Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015; Sermanet et al., "OverFeat", ICLR 2014).

The notes' rule: a dense layer of n units on a feature map of size h×w becomes a convolution with n
filters of size h×w and 'valid' padding; the dense layers after it become 1×1 convolutions. The
outputs at the training size are the original ones; on a larger image the network returns a grid of
class scores, one per h×w window of the feature map (OverFeat's "dense evaluation").

How a model is read, so any zoo model converts without per-family code: ``torch.fx`` traces it (in
eval mode, modules without a dense layer inside as leaves), the first ``nn.Linear`` is found, and the
chain of *linear* spatial reductions between the last 4-D feature map and it (flatten, adaptive or
global average pooling, ``mean`` over H, W, dropout, which is the identity in eval mode) is folded
into the convolution kernel: ``kernel = (dense ∘ reduction)ᵀ``, computed exactly by autograd. So
VGG's and AlexNet's adaptive pools and the global average pools of ResNet, GoogLeNet and LeNet-5 are
part of the first convolution. Everything after the first dense layer must be a chain: further
``nn.Linear`` become 1×1 convolutions; any other module or function (activations, dropout, LeNet-5's
RBF output) is applied at each position of the grid to the vector of that position.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

# Linear maps from the feature map to the dense layer's input (what may stand between them).
_REDUCTION_MODULES = (nn.Flatten, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.Dropout, nn.Identity)
_REDUCTION_FUNCTIONS = {torch.flatten, torch.mean, F.adaptive_avg_pool2d, F.dropout}
_REDUCTION_METHODS = {"flatten", "mean", "view", "reshape"}


class FCNError(ValueError):
    """The model cannot be converted; the message says what was found where."""


class PerPosition(nn.Module):
    """Apply a module or function of (N, F) vectors to every position of an (N, F, H, W) grid:
    (N, F, H, W) → (N·H·W, F) → fn → (N, F', H, W)."""

    def __init__(self, fn: nn.Module | Callable[..., torch.Tensor], *args, **kwargs) -> None:
        super().__init__()
        self.fn = fn
        self.args, self.kwargs = args, kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, f, h, w = x.shape
        y = self.fn(x.permute(0, 2, 3, 1).reshape(n * h * w, f), *self.args, **self.kwargs)
        return y.reshape(n, h, w, -1).permute(0, 3, 1, 2)


class FullyConvolutional(nn.Module):
    """The converted network: ``body`` (the original layers up to the last feature map) then ``head``
    (the dense layers as convolutions). Input (N, C, H, W) with H, W at least the training size;
    output (N, num_classes, H', W'): (N, num_classes, 1, 1) at the training size, equal to the
    original's (N, num_classes)."""

    def __init__(self, body: nn.Module, head: nn.Sequential, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.input_size = input_size  # the (H, W) the first convolution's kernel was made for

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class _Tracer(fx.Tracer):
    """Trace through containers and through modules that hold a dense layer; everything else is a
    leaf (its own forward, with whatever shape logic it has, runs as it is)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, nn.Linear):
            return True
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        return not any(isinstance(sub, nn.Linear) for sub in m.modules())


def _only_node_arg(node: fx.Node, where: str) -> fx.Node:
    nodes = [a for a in (*node.args, *node.kwargs.values()) if isinstance(a, fx.Node)]
    if len(nodes) != 1 or node.args[:1] != (nodes[0],):
        raise FCNError(
            f"{where}: {node.op} {node.target} takes {len(nodes)} tensors as inputs; expected "
            "one (a chain of layers)"
        )
    return nodes[0]


def _is_reduction(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _REDUCTION_MODULES)
    if node.op == "call_function":
        return node.target in _REDUCTION_FUNCTIONS
    if node.op == "call_method":
        return node.target in _REDUCTION_METHODS
    return False


def _apply(gm: fx.GraphModule, node: fx.Node, x: torch.Tensor) -> torch.Tensor:
    """Run one chain node on ``x`` (its only tensor input); other arguments are constants."""
    args, kwargs = node.args[1:], node.kwargs
    if node.op == "call_module":
        return gm.get_submodule(str(node.target))(x, *args, **kwargs)
    if node.op == "call_function":
        return node.target(x, *args, **kwargs)  # type: ignore[operator]
    return getattr(x, str(node.target))(*args, **kwargs)


def _shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()


def to_fully_convolutional(model: nn.Module, input_size: Sequence[int]) -> FullyConvolutional:
    """Convert a classifier whose head is flatten (or pooling) + dense layers into an equivalent
    fully convolutional network, weights copied (the model itself is left unchanged).

    Args:
        model: e.g. ``create_model("fashion_cnn")`` (trained). Traced in eval mode.
        input_size: the training image size, (H, W) or (C, H, W) (a registry ``input_size``).

    Returns:
        a ``FullyConvolutional`` in eval mode; at ``input_size`` its (N, K, 1, 1) output equals the
        model's (N, K) to float precision; on a larger image it is a grid of class scores.

    Raises:
        FCNError (a ``ValueError``): the model cannot be traced, has no dense layer, reaches its
        first dense layer through something that is not a linear reduction of a 4-D feature map, or
        does not end in a chain of layers after it.
    """
    name = type(model).__name__
    if len(input_size) not in (2, 3):
        raise FCNError(f"{name}: input_size={tuple(input_size)}; expected (H, W) or (C, H, W)")
    height, width = int(input_size[-2]), int(input_size[-1])
    model = copy.deepcopy(model).eval()
    try:
        graph = _Tracer().trace(model)
    except Exception as error:  # noqa: BLE001 (any tracing failure means "cannot convert")
        raise FCNError(
            f"{name}: torch.fx cannot trace it ({type(error).__name__}: {error})"
        ) from None
    gm = fx.GraphModule(model, graph)
    param = next(model.parameters(), None)
    channels = int(input_size[0]) if len(input_size) == 3 else _in_channels(model)
    example = torch.zeros(
        1, channels, height, width, device=param.device if param is not None else None
    )
    try:
        ShapeProp(gm).propagate(example)
    except Exception as error:  # noqa: BLE001
        raise FCNError(
            f"{name}: running it on a {tuple(example.shape)} input failed ({error})"
        ) from None

    nodes = list(gm.graph.nodes)
    linears = [
        n for n in nodes
        if n.op == "call_module" and isinstance(gm.get_submodule(str(n.target)), nn.Linear)
    ]  # fmt: skip
    if not linears:
        raise FCNError(
            f"{name}: no nn.Linear (dense) layer to convert; is it already convolutional?"
        )
    first = linears[0]
    where = f"{name}, dense layer {first.target!r}"

    # Walk back from the first dense layer through the linear reductions (pooling included, even
    # where it keeps 4-D maps: at a larger size an adaptive pool would squeeze the image back to
    # the training grid) to the feature map, which must be 4-D.
    chain: list[fx.Node] = []
    source = _only_node_arg(first, where)
    while _is_reduction(gm, source):
        chain.insert(0, source)
        source = _only_node_arg(source, where)
    if len(_shape(source)) != 4:
        raise FCNError(
            f"{where}: its input comes through {source.op} {source.target!r} with shape "
            f"{_shape(source)}, not from a 4-D feature map through linear reductions (flatten, "
            "average pooling, mean, dropout)"
        )
    feature_map = source
    if len(feature_map.users) != 1:
        raise FCNError(
            f"{where}: the feature map {feature_map.name!r} feeds more than the dense head"
        )
    _, map_channels, map_h, map_w = _shape(feature_map)
    dense = gm.get_submodule(str(first.target))
    assert isinstance(dense, nn.Linear)

    # The first convolution: kernel[o] = reductionᵀ(dense.weight[o]), by autograd on a zero map in
    # float64 (the reduction is linear, so its vector-Jacobian product is exactly its transpose).
    weight = dense.weight.detach().double()
    kernel = torch.empty(dense.out_features, map_channels, map_h, map_w, dtype=torch.float64)
    with torch.enable_grad():
        for start in range(0, dense.out_features, 256):
            rows = weight[start : start + 256]
            zero = torch.zeros(
                len(rows), map_channels, map_h, map_w, dtype=torch.float64,
                device=weight.device, requires_grad=True,
            )  # fmt: skip
            reduced = zero
            for node in chain:
                reduced = _apply(gm, node, reduced)
            if reduced.shape != (len(rows), dense.in_features):
                raise FCNError(
                    f"{where}: the reduction gives {tuple(reduced.shape[1:])} per image; expected "
                    f"({dense.in_features},)"
                )
            (grad,) = torch.autograd.grad((reduced * rows).sum(), zero)
            kernel[start : start + len(rows)] = grad.cpu()
    conv = nn.Conv2d(map_channels, dense.out_features, (map_h, map_w), bias=dense.bias is not None)
    head: list[nn.Module] = [conv]
    with torch.no_grad():
        conv.weight.copy_(kernel.to(conv.weight.dtype))
        if dense.bias is not None and conv.bias is not None:
            conv.bias.copy_(dense.bias)

    # After it: a chain to the output; dense layers become 1x1 convolutions.
    node = first
    while True:
        users = list(node.users)
        if len(users) != 1:
            raise FCNError(
                f"{name}: {node.op} {node.target!r} feeds {len(users)} nodes; expected a single "
                "chain of layers after the first dense layer"
            )
        previous, node = node, users[0]
        if node.op == "output":
            if node.args[0] is not previous:
                raise FCNError(
                    f"{name}: it returns {node.args[0]!r}; expected the last layer's tensor alone"
                )
            break
        _only_node_arg(node, f"{name}, {node.op} {node.target!r}")
        if node.op == "call_module":
            module = gm.get_submodule(str(node.target))
            if isinstance(module, nn.Linear):
                pointwise = nn.Conv2d(
                    module.in_features, module.out_features, 1, bias=module.bias is not None
                )
                with torch.no_grad():
                    pointwise.weight.copy_(module.weight[:, :, None, None])
                    if module.bias is not None and pointwise.bias is not None:
                        pointwise.bias.copy_(module.bias)
                head.append(pointwise)
            else:
                head.append(PerPosition(module, *node.args[1:], **node.kwargs))
        elif node.op == "call_function":
            head.append(PerPosition(node.target, *node.args[1:], **node.kwargs))
        elif node.op == "call_method":
            method = str(node.target)
            head.append(PerPosition(_method(method), *node.args[1:], **node.kwargs))
        else:
            raise FCNError(f"{name}: unexpected {node.op} {node.target!r} after the dense layers")

    body = fx.GraphModule(gm, _graph_up_to(gm.graph, feature_map))
    body.graph.eliminate_dead_code()
    body.recompile()
    device = param.device if param is not None else torch.device("cpu")
    return FullyConvolutional(body, nn.Sequential(*head), (height, width)).to(device).eval()


def _method(name: str) -> Callable[..., torch.Tensor]:
    def call(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return getattr(x, name)(*args, **kwargs)

    return call


def _in_channels(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise FCNError(
        f"{type(model).__name__}: no Conv2d to read the input channels from; pass (C, H, W)"
    )


def _graph_up_to(graph: fx.Graph, last: fx.Node) -> fx.Graph:
    """A copy of ``graph`` that returns ``last``, without the nodes only the head needed."""
    new = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node.op == "output":
            break
        env[node] = new.node_copy(node, lambda n: env[n])
        if node is last:
            break
    new.output(env[last])
    return new
