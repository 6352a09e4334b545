"""cnnkit: deep computer vision with convolutional neural networks, on PyTorch.

Layers of the package, lowest first (a lower layer never imports a higher one):
``device`` → ``ops`` (functional, TensorFlow-exact) → ``layers`` (modules) → ``models`` (zoo + registry)
→ ``data`` → ``train`` → ``memory``, ``pretrained``, ``viz`` → ``cli``.
"""

__version__ = "0.1.0"
