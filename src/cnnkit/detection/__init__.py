"""Object detection (Géron, ch. 14, "Object Detection"): boxes and non-max suppression, mAP, anchor
K-Means, dense-to-convolution conversion (FCN) and the pieces of a YOLO-style detector.

May import ``ops``, ``layers`` and ``models``; never ``train``, ``tasks`` or ``cli``.
"""
