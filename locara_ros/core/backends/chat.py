"""Command models: a chat model that streams one JSON command object for a conversation.

One small interface, :class:`CommandModel`, with two implementations:

* :class:`LlamaCppCommandModel` - a local GGUF model through llama-cpp-python, decoding constrained
  by a grammar derived from the command schema, so its output is valid JSON of the schema's shape
  by construction;
* :class:`OpenAICommandModel` - any OpenAI-compatible /chat/completions server (llama-server, vLLM,
  LiteLLM, llama-swap, llama-cpp-python's server) with ``response_format`` where the server
  supports it. Servers differ, so the caller validates every output again.

Both stream text deltas, stop between tokens when a cancel event is set (raising
:class:`~locara_ros.core.backends.openai_http.Cancelled`) and raise :class:`GenerationTimeout` when
a generation runs past its deadline.
"""
from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from contextlib import closing
from typing import Any, Iterator

from locara_ros.core.backends.openai_http import (
    BackendError,
    BackendUnavailable,
    Cancelled,
    OpenAIClient,
    ServerConfig,
)

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("auto", "json_schema", "json_object", "none")


class GenerationTimeout(BackendUnavailable):
    """The model did not finish within the generation timeout."""


class CommandModel(ABC):
    """A chat model that writes one JSON object per request."""

    #: Short backend description for logs and RobotCommand.origin ("llm:<name>").
    name: str = "model"

    @abstractmethod
    def stream(self, messages: list[dict[str, str]], json_schema: dict[str, Any], *,
               cancel: threading.Event | None = None, max_tokens: int = 160,
               temperature: float = 0.0, timeout_s: float = 30.0) -> Iterator[str]:
        """Yield text deltas of the model's answer. Blocking: call from a worker thread.

        Raises Cancelled when `cancel` is set, GenerationTimeout past `timeout_s`, and
        BackendError / BackendUnavailable when the backend fails.
        """

    def close(self) -> None:
        """Free the model or connection."""
        return None


def _check(cancel: threading.Event | None, deadline: float, timeout_s: float, name: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    if time.monotonic() > deadline:
        raise GenerationTimeout(f"{name}: no complete answer within {timeout_s:g} s")


class LlamaCppCommandModel(CommandModel):
    """A local GGUF model via llama-cpp-python with schema-constrained decoding."""

    def __init__(self, model_path: str = "", *, n_ctx: int = 2048, n_threads: int = 0,
                 chat_format: str = "", constrained: bool = True, seed: int = 0) -> None:
        from locara_ros.core.models import resolve_llm
        path = resolve_llm(model_path)  # ModelNotFoundError names the file
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise RuntimeError(f"llama-cpp-python is not installed ({e}); it is needed to run "
                               f"'{path}' locally") from e
        try:
            self.llm = Llama(model_path=str(path), n_ctx=int(n_ctx),
                             n_threads=int(n_threads) if n_threads > 0 else None,
                             chat_format=chat_format or None, seed=int(seed), verbose=False)
        except Exception as e:  # llama_cpp raises ValueError, RuntimeError or OSError
            raise RuntimeError(f"cannot load GGUF model '{path}': {e}") from e
        self.path = path
        self.constrained = constrained
        self.name = f"llama_cpp:{path.stem}"
        self._grammars: dict[str, Any] = {}

    def grammar(self, json_schema: dict[str, Any]) -> Any:
        """The llama.cpp grammar for a JSON schema (built once per schema)."""
        from llama_cpp import LlamaGrammar
        key = json.dumps(json_schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = LlamaGrammar.from_json_schema(
                json.dumps(bounded_numbers(json_schema)), verbose=False)
        return self._grammars[key]

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def stream(self, messages: list[dict[str, str]], json_schema: dict[str, Any], *,
               cancel: threading.Event | None = None, max_tokens: int = 160,
               temperature: float = 0.0, timeout_s: float = 30.0) -> Iterator[str]:
        deadline = time.monotonic() + timeout_s
        grammar = self.grammar(json_schema) if self.constrained else None
        try:
            chunks = self.llm.create_chat_completion(
                messages=messages, grammar=grammar, temperature=float(temperature),
                max_tokens=int(max_tokens), stream=True)
        except ValueError as e:  # e.g. the prompt does not fit the context
            raise BackendError(f"{self.name}: {e}") from e
        with closing(chunks):  # closing the generator stops llama.cpp between tokens
            for chunk in chunks:
                _check(cancel, deadline, timeout_s, self.name)
                delta = chunk["choices"][0].get("delta") or {}
                content = delta.get("content")
                if content:
                    yield content

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None


class OpenAICommandModel(CommandModel):
    """An OpenAI-compatible chat server, asked for JSON matching the schema.

    response_format: "json_schema" (OpenAI, vLLM, llama-server), "json_object" (with "schema":
    llama-cpp-python's server, llama-server), "none" (prompt only), or "auto": json_schema first,
    and on an HTTP 400/422 refusal json_object, then none; the mode that worked is kept.
    """

    def __init__(self, base_url: str, *, api_key: str = "", model: str = "",
                 timeout_s: float = 30.0, response_format: str = "auto") -> None:
        if response_format not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, "
                             f"got '{response_format}'")
        self.client = OpenAIClient(ServerConfig(base_url=base_url, api_key=api_key, model=model,
                                                timeout=float(timeout_s)))
        self.mode = response_format
        self._working_mode: str | None = None
        self.name = f"openai:{base_url}"

    def _modes(self) -> list[str]:
        if self.mode != "auto":
            return [self.mode]
        if self._working_mode is not None:
            return [self._working_mode]
        return ["json_schema", "json_object", "none"]

    def stream(self, messages: list[dict[str, str]], json_schema: dict[str, Any], *,
               cancel: threading.Event | None = None, max_tokens: int = 160,
               temperature: float = 0.0, timeout_s: float = 30.0) -> Iterator[str]:
        deadline = time.monotonic() + timeout_s
        modes = self._modes()
        for i, mode in enumerate(modes):
            params: dict[str, Any] = {"temperature": float(temperature),
                                      "max_tokens": int(max_tokens)}
            response_format = _response_format(mode, json_schema)
            if response_format is not None:
                params["response_format"] = response_format
            started = False
            try:
                for delta in self.client.chat_stream(messages, cancel=cancel, **params):
                    _check(cancel, deadline, timeout_s, self.name)
                    started = True
                    yield delta
                _check(cancel, deadline, timeout_s, self.name)
                self._working_mode = mode
                return
            except BackendUnavailable:
                raise
            except BackendError as e:
                # A refusal of the format: 400/415/422, or (llama-cpp-python's server) a 500
                # whose body names response_format.
                refused = re.search(r"HTTP (400|415|422)\b", str(e)) is not None or (
                    "HTTP 500" in str(e) and "response_format" in str(e))
                if started or not refused or i == len(modes) - 1:
                    raise
                log.warning("%s refused response_format %s (%s); trying %s", self.name, mode,
                            str(e)[:160], modes[i + 1])


def bounded_numbers(schema: Any, max_values: int = 1000) -> Any:
    """A copy of a JSON schema in which bounded numbers are enums of their allowed values.

    llama.cpp's schema-to-grammar converter ignores minimum/maximum; as enums the bounds hold by
    construction. Integers list every value; numbers list multiples of the finest step among
    0.01, 0.05, 0.1, 0.5, 1 that keeps the list under `max_values` (integral values in both
    spellings, "2" and "2.0"). Ranges too wide for that stay unbounded (validated afterwards).
    """
    if isinstance(schema, list):
        return [bounded_numbers(v, max_values) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded_numbers(v, max_values) for k, v in schema.items()}
    kind, lo, hi = out.get("type"), out.get("minimum"), out.get("maximum")
    if kind in ("integer", "number") and "enum" not in out and lo is not None and hi is not None:
        values: list[Any] | None = None
        if kind == "integer" and hi - lo < max_values:
            values = list(range(int(math.ceil(lo)), int(math.floor(hi)) + 1))
        elif kind == "number":
            for step in (0.01, 0.05, 0.1, 0.5, 1.0):
                first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
                if last - first < max_values:
                    values = []
                    for k in range(first, last + 1):
                        v = round(k * step, 2)
                        if float(v).is_integer():
                            values += [int(v), float(v)]
                        else:
                            values.append(v)
                    break
        if values:
            out = {k: v for k, v in out.items() if k not in ("minimum", "maximum", "type")}
            out["enum"] = values
    return out


def _response_format(mode: str, json_schema: dict[str, Any]) -> dict[str, Any] | None:
    if mode == "json_schema":
        return {"type": "json_schema",
                "json_schema": {"name": "robot_command", "strict": True, "schema": json_schema}}
    if mode == "json_object":
        return {"type": "json_object", "schema": json_schema}
    return None
