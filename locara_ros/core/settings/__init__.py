"""Each model node's parameters as one dataclass: names, defaults, descriptions, ranges, words.

No ROS here. A node declares every field of its settings class as a ROS parameter
(`locara_ros.nodes.common.declare_settings`): the description goes into the descriptor
(`ros2 param describe`), a range into the descriptor's range (rclpy refuses values outside it,
NaN and infinity), `choices` are the allowed words; only `dynamic` fields may change at run time,
the rest are read-only. `check()` then validates what one field cannot (combinations, derived
limits) and raises ValueError with the reason, so a bad value stops the node at start-up with
the parameter's name.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence


def setting(default: Any, description: str, *, limits: tuple[float, float] | None = None,
            choices: Sequence[str] | None = None, dynamic: bool = False) -> Any:
    """One parameter: its default, description, inclusive range or allowed words."""
    meta = {"description": description, "limits": limits,
            "choices": tuple(choices) if choices is not None else None, "dynamic": dynamic}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Spec:
    name: str
    default: Any
    description: str
    limits: tuple[float, float] | None
    choices: tuple[str, ...] | None
    dynamic: bool


class Settings:
    """Base of the settings dataclasses."""

    @classmethod
    def specs(cls) -> list[Spec]:
        out = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            m = f.metadata
            out.append(Spec(f.name, default, m["description"], m["limits"], m["choices"],
                            m["dynamic"]))
        return out

    @classmethod
    def runtime_refusal(cls, name: str, value: Any) -> str:
        """Why setting parameter `name` to `value` while the node runs is refused, or "" (only
        `dynamic` fields change at run time; the value must fit the field's type and range, and
        a number must be finite)."""
        spec = next((s for s in cls.specs() if s.name == name), None)
        if spec is None or not spec.dynamic:
            return f"{name} is fixed at start-up; restart the node"
        if isinstance(spec.default, bool):
            return "" if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"{name} must be finite, got {value}"
        if spec.limits is not None and not spec.limits[0] <= value <= spec.limits[1]:
            return f"{name} must be in [{spec.limits[0]}, {spec.limits[1]}], got {value}"
        return ""

    def check(self) -> None:
        """Validate combinations; raise ValueError naming the parameter(s)."""
