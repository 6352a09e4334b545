"""Tasks: what differs between classification, localization, detection, segmentation and
super-resolution (model head, loss, streaming metrics, decoding, report), behind one interface that
the ``Trainer`` and the CLI use. See :mod:`cnnkit.tasks.base`."""

from cnnkit.tasks.base import StreamingMetric, SumMetric, Task
from cnnkit.tasks.registry import get_task, list_tasks, register_task, task_options

__all__ = [
    "StreamingMetric",
    "SumMetric",
    "Task",
    "get_task",
    "list_tasks",
    "register_task",
    "task_options",
]
