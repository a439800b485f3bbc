"""The teacher stage of a benchmark row (:class:`~evssl.benchmark.registry.TeacherStage`): the fit config of the
network a method needs trained first, built from the teacher's own config and the method's resolved config so the
two describe the same network on the same frames (pure functions on config dicts; the runner trains it)."""

from __future__ import annotations

import copy
from typing import Any

from evssl.benchmark.config import set_dotted
from evssl.benchmark.registry import TeacherStage

__all__ = ["MISSING", "get_dotted", "link_teacher_config", "pop_dotted"]

MISSING: Any = object()


def get_dotted(cfg: dict[str, Any], key: str, default: Any = MISSING) -> Any:
    """``cfg["a"]["b"]["c"]`` for ``key = "a.b.c"``, or ``default`` where a part is missing."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def pop_dotted(cfg: dict[str, Any], key: str) -> None:
    """Remove ``key = "a.b.c"`` from ``cfg`` where it is set."""
    *parents, last = key.split(".")
    node = get_dotted(cfg, ".".join(parents), None) if parents else cfg
    if isinstance(node, dict):
        node.pop(last, None)


def link_teacher_config(
    teacher_cfg: dict[str, Any], stage: TeacherStage, method_cfg: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """``teacher_cfg`` (the teacher's fit config with the grid's source and seed forced in) with ``stage.links``
    copied from ``method_cfg`` (a key the method config lacks is removed, so both take the class default), then
    ``stage.fixed``, then the grid's ``teacher_overrides``; the inputs are not modified."""
    cfg = copy.deepcopy(teacher_cfg)
    for src, dst in stage.links:
        value = get_dotted(method_cfg, src)
        if value is MISSING:
            pop_dotted(cfg, dst)
        else:
            set_dotted(cfg, dst, value)
    for key, value in (*stage.fixed, *overrides.items()):
        set_dotted(cfg, key, value)
    return cfg
