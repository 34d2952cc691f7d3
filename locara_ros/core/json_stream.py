"""Reading one JSON object while a model writes it (no rclpy).

:class:`StreamingJsonReader` records the raw text of each completed top-level value, so a caller
can act as soon as some keys are complete (the command parser publishes the command once
"action" and "arguments" are done), and decodes the string value of one key incrementally,
JSON escapes included, so a reply can be spoken while it is being written.
"""
from __future__ import annotations

import json
from typing import Any

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
            "t": "\t"}


class StreamingJsonReader:
    """Reads one top-level JSON object as it is generated.

    Records the raw text of each completed top-level value (so a caller can act as soon as some
    keys are complete) and decodes the string value of `stream_key` incrementally, JSON escapes
    included, returning the decoded characters from :meth:`feed` as they arrive.
    """

    def __init__(self, stream_key: str = "reply") -> None:
        self.stream_key = stream_key
        self.raw: list[str] = []
        self.values: dict[str, str] = {}  # key -> raw JSON text of the completed value
        self.done = False
        self.error = ""
        self._depth = 0
        self._in_string = False
        self._escape: str | None = None  # escape sequence so far, after the backslash
        self._high_surrogate = ""
        self._state = "start"  # start | key | colon | value | after
        self._key: list[str] = []
        self._current_key = ""
        self._value_start = -1
        self._value_kind = ""  # string | nested | scalar
        self._streaming = False

    @property
    def text(self) -> str:
        return "".join(self.raw)

    def has(self, *keys: str) -> bool:
        return all(k in self.values for k in keys)

    def value(self, key: str) -> Any:
        return json.loads(self.values[key])

    def feed(self, delta: str) -> str:
        out: list[str] = []
        for ch in delta:
            self._char(ch, out)
        return "".join(out)

    def _end_value(self, end: int) -> None:
        self.values[self._current_key] = "".join(self.raw[self._value_start:end])
        self._value_start, self._value_kind, self._streaming = -1, "", False
        self._state = "after"

    def _char(self, ch: str, out: list[str]) -> None:
        self.raw.append(ch)
        pos = len(self.raw) - 1
        if self.done or self.error:
            return
        if self._in_string:
            self._string_char(ch, pos, out)
            return
        top = self._depth == 1
        if ch == '"':
            self._in_string = True
            if top and self._state in ("start", "key"):
                self._state, self._key = "key", []
            elif top and self._state == "value":
                self._value_start, self._value_kind = pos, "string"
                self._streaming = self._current_key == self.stream_key
            return
        if ch in "{[":
            self._depth += 1
            if self._depth == 1:
                if ch != "{":
                    self.error = "output is not a JSON object"
                self._state = "start"
            elif self._depth == 2 and self._state == "value":
                self._value_start, self._value_kind = pos, "nested"
            return
        if ch in "}]":
            if top and self._value_kind == "scalar":
                self._end_value(pos)
            self._depth -= 1
            if self._depth == 1 and self._value_kind == "nested":
                self._end_value(pos + 1)
            elif self._depth == 0:
                self.done = True
            elif self._depth < 0:
                self.error = "unbalanced brackets"
            return
        if not top:
            return
        if ch == ":" and self._state == "colon":
            self._state = "value"
        elif ch == ",":
            if self._value_kind == "scalar":
                self._end_value(pos)
            self._state = "key"
        elif ch.isspace():
            if self._value_kind == "scalar":
                self._end_value(pos)
        elif self._state == "value" and self._value_start < 0:
            self._value_start, self._value_kind = pos, "scalar"

    def _string_char(self, ch: str, pos: int, out: list[str]) -> None:
        top_key = self._depth == 1 and self._state == "key"
        if self._escape is not None:  # inside an escape sequence (after the backslash)
            seq = self._escape + ch
            if seq[0] == "u" and len(seq) < 5:
                self._escape = seq
                return
            self._escape = None
            if seq[0] == "u":
                try:
                    decoded = chr(int(seq[1:], 16))
                except ValueError:
                    decoded = ""
            else:
                decoded = _ESCAPES.get(seq, "")
            if decoded and 0xD800 <= ord(decoded) <= 0xDBFF:
                self._high_surrogate = decoded
                return
            if self._high_surrogate:
                pair = self._high_surrogate + decoded
                self._high_surrogate = ""
                decoded = pair.encode("utf-16-le", "surrogatepass").decode("utf-16-le",
                                                                           "replace")
            self._emit(decoded, top_key, out)
            return
        if ch == "\\":
            self._escape = ""
            return
        if ch == '"':
            self._in_string = False
            if top_key:
                self._current_key = "".join(self._key)
                self._state = "colon"
            elif self._depth == 1 and self._value_kind == "string":
                self._end_value(pos + 1)
            return
        self._emit(ch, top_key, out)

    def _emit(self, text: str, top_key: bool, out: list[str]) -> None:
        if top_key:
            self._key.append(text)
        elif self._streaming:
            out.append(text)
