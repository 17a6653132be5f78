"""Element paths of a StructureDefinition, compiled into steps walked over a resource's JSON.

Two walks: `select_fast` yields the values only (the path of every write), `select` also
builds each value's FHIRPath, for the issues, and is run only when a check fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Step:
    """One step of an element path: `identifier:INS-NIR` -> name identifier, slice INS-NIR."""

    name: str  # without [x]
    choice: bool
    slice_name: str | None = None
    member: Callable[[Any], bool] | None = None  # slice membership, compiled

    def children(self, node: Any, expr: str) -> Iterator[tuple[Any, str]]:
        if not isinstance(node, dict):
            return
        if self.choice:
            values = [
                v
                for k, v in node.items()
                if k.startswith(self.name) and k[len(self.name) : len(self.name) + 1].isupper()
            ]
        else:
            value = node.get(self.name)
            values = [] if value is None else [value]
        base = f"{expr}.{self.name}"
        member = self.member
        for value in values:
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if member is None or member(item):
                        yield item, f"{base}[{i}]"
            elif member is None or member(value):
                yield value, base


def step_values(step: Step, node: Any) -> list | tuple:
    """The instances of `step` in `node`, without their FHIRPath (the fast path)."""
    if not isinstance(node, dict):
        return ()
    if step.choice:
        return [item for item, _ in step.children(node, "")]
    value = node.get(step.name)
    if value is None:
        return ()
    member = step.member
    if isinstance(value, list):
        return value if member is None else [item for item in value if member(item)]
    return (value,) if member is None or member(value) else ()


def select_fast(root: dict, steps: tuple[Step, ...]) -> list | tuple:
    nodes: list | tuple = (root,)
    for step in steps:
        if len(nodes) == 1:
            nodes = step_values(step, nodes[0])
        else:
            nodes = [child for node in nodes for child in step_values(step, node)]
        if not nodes:
            break
    return nodes


def select(root: dict, steps: tuple[Step, ...], root_expr: str) -> list[tuple[Any, str]]:
    nodes: list[tuple[Any, str]] = [(root, root_expr)]
    for step in steps:
        nodes = [child for node, expr in nodes for child in step.children(node, expr)]
        if not nodes:
            break
    return nodes
