"""Answers the robot knows without a model (no rclpy): the clock.

The schema's answer sentences carry their reply, or ``answer: time`` / ``answer: date``, which
are read from the robot's clock here. Anything else a small model would only invent ("It's
2:30am"), so unknown questions get :data:`REPLY_NO_ANSWER` unless the node is configured to let a
model answer (answer_source: model).
"""
from __future__ import annotations

import datetime as _dt

REPLY_NO_ANSWER = "Sorry, I don't know."


def clock_answer(kind: str, now: _dt.datetime | None = None) -> str:
    """'It is 3:05 PM.' (kind "time") or 'Today is Monday, November 30.' (kind "date")."""
    now = now or _dt.datetime.now()
    if kind == "time":
        hour = now.hour % 12 or 12
        return f"It is {hour}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}."
    if kind == "date":
        return f"Today is {now:%A}, {now:%B} {now.day}, {now.year}."
    raise ValueError(f"unknown answer kind '{kind}'")
