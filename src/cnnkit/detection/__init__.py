"""Object detection (Géron, ch. 14, "Object Detection"): boxes and non-max suppression, mAP, anchor
K-Means, dense-to-convolution conversion (FCN) and the pieces of a YOLO-style detector.

May import ``ops``, ``layers`` and ``models``; never ``train``, ``tasks`` or ``cli``.
"""

from cnnkit.detection.anchors import euclidean_kmeans_anchors, kmeans_anchors, mean_best_iou
from cnnkit.detection.boxes import (
    box_iou,
    check_boxes,
    convert_boxes,
    decode_localization,
    denormalize_boxes,
    encode_localization,
    nms,
    normalize_boxes,
    wh_iou,
)
from cnnkit.detection.fcn import FCNError, FullyConvolutional, to_fully_convolutional
from cnnkit.detection.metrics import (
    COCO_SUMMARY_KEYS,
    DetectionMetric,
    mean_average_precision,
    voc_ap,
)
from cnnkit.detection.yolo import (
    DEFAULT_ANCHORS,
    Assignment,
    YOLODetector,
    YOLOHead,
    assign_targets,
    decode_boxes,
    decode_outputs,
    encode_boxes,
    postprocess,
    yolo_loss,
)

__all__ = [
    "COCO_SUMMARY_KEYS",
    "DEFAULT_ANCHORS",
    "Assignment",
    "DetectionMetric",
    "FCNError",
    "FullyConvolutional",
    "YOLODetector",
    "YOLOHead",
    "assign_targets",
    "box_iou",
    "check_boxes",
    "convert_boxes",
    "decode_boxes",
    "decode_localization",
    "decode_outputs",
    "denormalize_boxes",
    "encode_boxes",
    "encode_localization",
    "euclidean_kmeans_anchors",
    "kmeans_anchors",
    "mean_average_precision",
    "mean_best_iou",
    "nms",
    "normalize_boxes",
    "postprocess",
    "to_fully_convolutional",
    "voc_ap",
    "wh_iou",
    "yolo_loss",
]
