"""Make ``tests/fixtures/tf/ops_parity.npz``: TensorFlow's outputs for the calls ``cnnkit.ops`` copies.

Run once, in a throwaway environment (TensorFlow is not a dependency of cnnkit):

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu numpy scikit-learn
    /tmp/tfenv/bin/python scripts/make_tf_fixtures.py

Every case stores its inputs, its TensorFlow call (in ``index``, a JSON string) and TensorFlow's output;
``tests/test_ops_tf_parity.py`` replays the calls through cnnkit. Inputs are small random float32
tensors with odd and even heights/widths so every padding split occurs, plus corner crops of the
notes' feature-map example on the two sklearn sample images.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_sample_image

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tf" / "ops_parity.npz"
SHAPES = [(2, 7, 8, 3), (1, 10, 9, 2)]  # odd/even height and width
rng = np.random.default_rng(0)
arrays: dict[str, np.ndarray] = {}
index: list[dict] = []
stored: dict[int, str] = {}  # id(input array) -> key, so a shared input is stored once


def add(kind: str, call: dict, inputs: dict[str, np.ndarray], output: np.ndarray) -> None:
    key = f"{len(index):03d}"
    names = {}
    for name, value in inputs.items():
        if id(value) not in stored:
            stored[id(value)] = f"{key}/{name}"
            arrays[f"{key}/{name}"] = np.asarray(value, np.float32)
        names[name] = stored[id(value)]
    arrays[f"{key}/expected"] = np.asarray(output, np.float32)
    index.append({"kind": kind, "call": call, "inputs": names, "expected": f"{key}/expected"})


def random(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def weights(*shape: int, fan_in: int) -> np.ndarray:
    """Standard normal / sqrt(fan_in), the scale of an initialised layer (LeCun et al., 1998), so
    outputs are of order 1 as in a network and the 1e-5 absolute tolerance means a few float32 ulps
    (unit-variance 7×7×3 filters give outputs near 40, where one ulp is already 4e-6)."""
    return (random(*shape) / np.sqrt(fan_in)).astype(np.float32)


# tf.nn.conv2d: kernels odd, even and non-square; strides 1-3; both paddings; dilation 2.
for shape in SHAPES:
    images = random(*shape)
    for kh, kw in [(3, 3), (2, 2), (4, 3), (7, 7)]:
        filters = weights(kh, kw, shape[3], 3, fan_in=kh * kw * shape[3])
        for stride in (1, 2, 3):
            for padding in ("SAME", "VALID"):
                for dilation in (1, 2):
                    if dilation * (max(kh, kw) - 1) + 1 > min(shape[1:3]) and padding == "VALID":
                        continue
                    try:
                        out = tf.nn.conv2d(
                            images, filters, strides=stride, padding=padding, dilations=dilation
                        )
                    except Exception as exc:  # noqa: BLE001 - record what TF refuses, skip the case
                        print(f"conv2d s={stride} d={dilation} refused by TF: {type(exc).__name__}")
                        continue
                    call = {"strides": stride, "padding": padding, "dilations": dilation}
                    add("conv2d", call, {"images": images, "filters": filters}, out.numpy())
    # the notes' 4-element strides form and a non-square stride
    filters = weights(3, 3, shape[3], 2, fan_in=9 * shape[3])
    for strides in ([1, 2, 2, 1], [1, 1, 2, 1], [1, 3, 1, 1]):
        out = tf.nn.conv2d(images, filters, strides=strides, padding="SAME")
        add("conv2d", {"strides": strides, "padding": "SAME", "dilations": 1},
            {"images": images, "filters": filters}, out.numpy())  # fmt: skip

# tf.nn.max_pool / tf.nn.avg_pool: square and non-square windows, strides 1-3, both paddings.
for shape in SHAPES:
    images = random(*shape)
    for op, fn in (("max_pool", tf.nn.max_pool2d), ("avg_pool", tf.nn.avg_pool2d)):
        for ksize in (2, 3, (2, 3)):
            for stride in (1, 2, 3):
                for padding in ("SAME", "VALID"):
                    out = fn(images, ksize=ksize, strides=stride, padding=padding)
                    call = {"ksize": ksize, "strides": stride, "padding": padding}
                    add(op, call, {"images": images}, out.numpy())
# depth pooling, as the notes: ksize=(1, 1, 1, 3), strides=(1, 1, 1, 3)
images = random(2, 5, 4, 6)
out = tf.nn.max_pool(images, ksize=(1, 1, 1, 3), strides=(1, 1, 1, 3), padding="VALID")
add("max_pool", {"ksize": [1, 1, 1, 3], "strides": [1, 1, 1, 3], "padding": "VALID"},
    {"images": images}, out.numpy())  # fmt: skip

# tf.nn.local_response_normalization: TF's defaults, AlexNet's, and depth radius past the edges.
images = np.abs(random(2, 3, 4, 9)) * 2
for params in (
    {},
    {"depth_radius": 2, "bias": 2.0, "alpha": 2e-5, "beta": 0.75},
    {"depth_radius": 0, "bias": 1.0, "alpha": 0.5, "beta": 0.5},
    {"depth_radius": 1, "bias": 0.5, "alpha": 1.0, "beta": 1.0},
):
    out = tf.nn.local_response_normalization(images, **params)
    add("local_response_normalization", params, {"images": images}, out.numpy())

# tf.reduce_mean(X, axis=[1, 2]), the notes' global average pooling
for shape in SHAPES:
    images = random(*shape)
    add("global_avg_pool", {}, {"images": images}, tf.reduce_mean(images, axis=[1, 2]).numpy())

# keras.layers.Conv2DTranspose: output sizes and values (kernel [kh, kw, out, in]); small inputs,
# as the outputs grow with the stride.
for shape in [(1, 4, 5, 3)]:
    images = random(*shape)
    for k in (1, 2, 3, 4):
        for stride in (1, 2, 3):
            for padding in ("same", "valid"):
                layer = tf.keras.layers.Conv2DTranspose(2, k, strides=stride, padding=padding)
                layer.build(shape)
                kernel, bias = weights(k, k, 2, shape[3], fan_in=k * k * shape[3]), random(2)
                layer.set_weights([kernel, bias])
                call = {"kernel_size": k, "strides": stride, "padding": padding}
                inputs = {"images": images, "kernel": kernel, "bias": bias}
                add("conv2d_transpose", call, inputs, layer(images).numpy())

# tf.nn.separable_conv2d (Keras SeparableConv2D without bias): depthwise then pointwise.
for shape in SHAPES:
    images = random(*shape)
    for stride in (1, 2):
        for padding in ("SAME", "VALID"):
            depthwise = weights(3, 3, shape[3], 2, fan_in=9)
            pointwise = weights(1, 1, shape[3] * 2, 4, fan_in=shape[3] * 2)
            out = tf.nn.separable_conv2d(
                images, depthwise, pointwise, strides=[1, stride, stride, 1], padding=padding
            )
            call = {"strides": stride, "padding": padding, "depth_multiplier": 2}
            inputs = {"images": images, "depthwise": depthwise, "pointwise": pointwise}
            add("separable_conv2d", call, inputs, out.numpy())

# The notes' feature-map example on the sample images: corner crops (where the padding acts) and
# per-map sums of the full output (float64), so the fixture stays small.
samples = np.array([load_sample_image("china.jpg"), load_sample_image("flower.jpg")]) / 255
samples = samples.astype(np.float32)
# JPEG decoders can differ between Pillow builds: the test checks the decoded pixels first.
arrays["notes/images_sums"] = samples.astype(np.float64).sum(axis=(1, 2, 3))
filters = np.zeros((7, 7, 3, 2), np.float32)
filters[:, 3, :, 0] = 1  # vertical line
filters[3, :, :, 1] = 1  # horizontal line
for stride in (1, 2):
    out = tf.nn.conv2d(samples, filters, strides=stride, padding="SAME").numpy()
    arrays[f"notes/stride{stride}/top_left"] = out[:, :12, :12, :]
    arrays[f"notes/stride{stride}/bottom_right"] = out[:, -12:, -12:, :]
    arrays[f"notes/stride{stride}/shape"] = np.array(out.shape)
    arrays[f"notes/stride{stride}/sums"] = out.astype(np.float64).sum(axis=(1, 2))

arrays["index"] = np.array(json.dumps(index))
arrays["versions"] = np.array(json.dumps({"tensorflow": tf.__version__, "numpy": np.__version__}))
OUT.parent.mkdir(parents=True, exist_ok=True)
np.savez_compressed(OUT, **arrays)
print(f"{len(index)} cases, {OUT.stat().st_size / 1024:.0f} KiB -> {OUT}", file=sys.stderr)
