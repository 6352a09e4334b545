"""Tasks by name: ``get_task("classify", label_smoothing=0.1)``; a mistake lists what is valid."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, TypeVar

from cnnkit.tasks.base import Task

_TASKS: dict[str, type[Task]] = {}
# Task modules imported on first use, so that importing cnnkit.tasks stays cheap.
_MODULES = (
    "cnnkit.tasks.classify",
    "cnnkit.tasks.localize",
    "cnnkit.tasks.detect",
    "cnnkit.tasks.segment",
    "cnnkit.tasks.superres",
)

T = TypeVar("T", bound=type[Task])


def register_task(cls: T) -> T:
    """Class decorator: make a :class:`Task` subclass available under its ``name``."""
    if cls.name in _TASKS and _TASKS[cls.name] is not cls:
        raise ValueError(f"task {cls.name!r} is registered twice")
    _TASKS[cls.name] = cls
    return cls


def _load_builtin() -> None:
    for module in _MODULES:
        importlib.import_module(module)


def list_tasks() -> list[str]:
    """The registered task names, sorted."""
    _load_builtin()
    return sorted(_TASKS)


def task_options(name: str) -> list[str]:
    """The option names ``get_task(name, ...)`` accepts."""
    _load_builtin()
    return [p for p in inspect.signature(_TASKS[name].__init__).parameters if p != "self"]


def get_task(name: str, **options: Any) -> Task:
    """The task ``name`` built with ``options``; an unknown name or option lists the valid ones."""
    _load_builtin()
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(sorted(_TASKS))}")
    valid = task_options(name)
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise ValueError(
            f"task {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(valid) or '(none)'}"
        )
    return _TASKS[name](**options)
