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

import copy
import json
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from contextlib import closing
from typing import Any, Iterator

import numpy as np

from locara_ros.core.backends.openai_http import (
    BackendError,
    BackendUnavailable,
    Cancelled,
    OpenAIClient,
    ServerConfig,
)

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("auto", "json_schema", "json_object", "none")
DECODE_MODES = ("grammar", "two_stage")
# two_stage: how candidate action names are ranked: "first" (the log-likelihood of the name's
# first token, when it is unique among the candidates: one evaluation for all), "mean" (per
# token over the whole name), "sum" (over the whole name)
ACTION_SCORES = ("first", "mean", "sum")
# Free-text arguments copied from the request: at most this many words are offered as spans.
MAX_COPY_WORDS = 40


class GenerationTimeout(BackendUnavailable):
    """The model did not finish within the generation timeout."""


class CommandModel(ABC):
    """A chat model that writes one JSON object per request."""

    #: Short backend description for logs and RobotCommand.origin ("llm:<name>").
    name: str = "model"
    #: Probability of the action chosen in the last request (two-stage decoding), else None.
    last_confidence: float | None = None

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
        raise GenerationTimeout(f"{name}: no complete answer within {timeout_s:g} s",
                                timed_out=True)


class LlamaCppCommandModel(CommandModel):
    """A local GGUF model via llama-cpp-python with schema-constrained decoding.

    decode="grammar": one generation constrained by the grammar of the whole output schema; the
    action is the greedy choice of its first token. decode="two_stage": first every action name
    the schema allows is scored by its full log-likelihood after the prompt (a few single-token
    decodes on the cached prompt), the most likely one is chosen (and its probability among the
    actions becomes :attr:`last_confidence`); then the output is generated under the grammar of
    that action alone. With ``min_action_prob`` > 0 an action less likely than that becomes the
    clarify pseudo-action. With ``copy_free_text``, free-text string arguments (no enum) must be
    a span of the user's words, so a small model cannot paraphrase or copy an example instead.
    """

    def __init__(self, model_path: str = "", *, n_ctx: int = 2048, n_threads: int = 0,
                 chat_format: str = "", constrained: bool = True, seed: int = 0,
                 decode: str = "grammar", copy_free_text: bool = False,
                 min_action_prob: float = 0.0, action_score: str = "first") -> None:
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got '{decode}'")
        if action_score not in ACTION_SCORES:
            raise ValueError(f"action_score must be one of {', '.join(ACTION_SCORES)}, got "
                             f"'{action_score}'")
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
        self.decode = decode
        self.copy_free_text = bool(copy_free_text)
        self.min_action_prob = float(min_action_prob)
        # "sum": log-likelihood of the name; "mean": per token (names of many tokens are not
        # penalized for their length).
        self.action_score = action_score
        self.name = f"llama_cpp:{path.stem}"
        self.last_confidence = None
        self._grammars: dict[str, Any] = {}
        self._formatter = self._chat_formatter(chat_format)
        if decode == "two_stage" and self._formatter is None:
            log.warning("%s: no chat template in the GGUF (or chat_format set); two-stage "
                        "decoding is off", self.name)

    def _chat_formatter(self, chat_format: str) -> Any:
        """The GGUF's own chat template (as create_chat_completion uses it), or None."""
        template = self.llm.metadata.get("tokenizer.chat_template")
        if chat_format or not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        def token(i: int) -> str:
            return self.llm._model.token_get_text(i) if i != -1 else ""
        return Jinja2ChatFormatter(template=template, eos_token=token(self.llm.token_eos()),
                                   bos_token=token(self.llm.token_bos()))

    def grammar(self, json_schema: dict[str, Any], cache: bool = True) -> Any:
        """The llama.cpp grammar for a JSON schema (built once per schema when cached)."""
        from llama_cpp import LlamaGrammar
        key = json.dumps(json_schema, sort_keys=True)
        if key in self._grammars:
            return self._grammars[key]
        grammar = LlamaGrammar.from_json_schema(json.dumps(bounded_numbers(json_schema)),
                                                verbose=False)
        if cache:
            self._grammars[key] = grammar
        return grammar

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def stream(self, messages: list[dict[str, str]], json_schema: dict[str, Any], *,
               cancel: threading.Event | None = None, max_tokens: int = 160,
               temperature: float = 0.0, timeout_s: float = 30.0) -> Iterator[str]:
        deadline = time.monotonic() + timeout_s
        self.last_confidence = None
        grammar = None
        if self.constrained:
            alternatives = action_alternatives(json_schema)
            if self.decode == "two_stage" and self._formatter is not None and alternatives:
                action, self.last_confidence = self.choose_action(
                    messages, list(alternatives), cancel, deadline, timeout_s)
                json_schema = alternatives[action]
            spans = copy_spans(json_schema, _last_user_text(messages)) if self.copy_free_text \
                else json_schema
            # cached per schema, unless it holds this request's words as spans
            grammar = self.grammar(spans, cache=spans is json_schema or spans == json_schema)
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

    # ------------------------------------------------------------------ two-stage decoding
    def action_scores(self, messages: list[dict[str, str]], actions: list[str],
                      cancel: threading.Event | None = None, deadline: float = math.inf,
                      timeout_s: float = 0.0) -> dict[str, float]:
        """Log-likelihood of each action name as the start of the answer to `messages`:
        log P('{"action": "<name>",' | prompt), summed over its tokens (action_score "sum") or
        per token ("mean")."""
        llm = self.llm
        try:
            prompt = self._formatter(messages=messages).prompt
        except Exception as e:  # a template error is a backend error
            raise BackendError(f"{self.name}: chat template failed: {e}") from e
        # '",' as the model saw it in every example: the quote alone is a rare token there.
        seqs = {a: llm.tokenize((prompt + '{"action": "' + a + '",').encode("utf-8"),
                                add_bos=False, special=True) for a in actions}
        if len(next(iter(seqs.values()))) + 4 > llm.n_ctx():
            raise BackendError(f"{self.name}: the prompt does not fit the context "
                               f"({llm.n_ctx()} tokens)")
        common = _common_prefix(list(seqs.values()))
        base = next(iter(seqs.values()))[:common]
        cached = _common_prefix([list(llm.input_ids[:llm.n_tokens]), base])
        llm.n_tokens = min(cached, common - 1)  # at least one token evaluated: fresh logits
        llm.eval(base[llm.n_tokens:])
        first = self._logprobs()
        heads = [seq[common] for seq in seqs.values()]
        scores: dict[str, float] = {}
        for action, seq in seqs.items():
            _check(cancel, deadline, timeout_s, self.name)
            rest = seq[common:]
            total = float(first[rest[0]])
            if self.action_score == "first" and heads.count(rest[0]) == 1:
                # the first token tells this action from every other candidate: one model
                # evaluation scores them all (the grammar forces the rest of the name)
                scores[action] = total
                continue
            llm.n_tokens = common
            for prev, tok in zip(rest, rest[1:], strict=False):
                llm.eval([prev])
                total += float(self._logprobs()[tok])
            scores[action] = total if self.action_score == "sum" else total / len(rest)
        llm.n_tokens = common  # the prompt stays cached for the generation
        return scores

    def choose_action(self, messages: list[dict[str, str]], actions: list[str],
                      cancel: threading.Event | None, deadline: float, timeout_s: float
                      ) -> tuple[str, float]:
        """(most likely action, its probability among the actions); an action below
        min_action_prob becomes the clarify pseudo-action when the schema has one."""
        from locara_ros.core.command_schema import CLARIFY
        scores = self.action_scores(messages, actions, cancel, deadline, timeout_s)
        best = max(scores, key=scores.get)
        top = max(scores.values())
        norm = sum(math.exp(v - top) for v in scores.values())
        prob = 1.0 / norm
        if best != CLARIFY and prob < self.min_action_prob and CLARIFY in scores:
            log.info("most likely action %s has p=%.2f < %.2f: clarify", best, prob,
                     self.min_action_prob)
            best, prob = CLARIFY, math.exp(scores[CLARIFY] - top) / norm
        self.last_confidence = prob
        return best, prob

    def _logprobs(self) -> np.ndarray:
        n_vocab = self.llm.n_vocab()
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
        logits = logits.astype(np.float64)
        top = logits.max()
        return logits - top - math.log(np.exp(logits - top).sum())

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
                    if not started:
                        # the server accepts this format: remember it now (the caller often
                        # stops reading once the command is complete)
                        started = True
                        if self._working_mode != mode:
                            log.info("%s: response_format %s works", self.name, mode)
                        self._working_mode = mode
                    yield delta
                _check(cancel, deadline, timeout_s, self.name)
                self._working_mode = mode
                return
            except BackendUnavailable:
                raise
            except BackendError as e:
                # A refusal of the format: 400/415/422, or (llama-cpp-python's server) a 500
                # whose body names response_format.
                refused = e.status in (400, 415, 422) or (
                    e.status == 500 and "response_format" in e.body)
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


def action_alternatives(json_schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """action name -> the output schema of that action alone, for a schema made of one
    alternative per action (CommandSchema.json_schema); {} for any other schema."""
    out: dict[str, dict[str, Any]] = {}
    for alt in json_schema.get("anyOf") or []:
        enum = (((alt.get("properties") or {}).get("action") or {}).get("enum") or [None])
        if len(enum) != 1 or not isinstance(enum[0], str):
            return {}
        out[enum[0]] = alt
    return out


def copy_spans(json_schema: dict[str, Any], text: str) -> dict[str, Any]:
    """A copy of the schema whose free-text argument strings (no enum) must be a span of the
    request's words (punctuation at the ends dropped). Unchanged for long or empty requests."""
    words = [w.strip(".,!?;:\"'") for w in text.split()]
    words = [w for w in words if w]
    if not words or len(words) > MAX_COPY_WORDS:
        return json_schema
    spans = sorted({" ".join(words[i:j]) for i in range(len(words))
                    for j in range(i + 1, len(words) + 1)})
    out = copy.deepcopy(json_schema)
    for alt in out.get("anyOf") or [out]:
        props = ((alt.get("properties") or {}).get("arguments") or {}).get("properties") or {}
        for name, arg in props.items():
            if arg.get("type") == "string" and "enum" not in arg:
                lo, hi = arg.get("minLength", 0), arg.get("maxLength", math.inf)
                allowed = [s for s in spans if lo <= len(s) <= hi]
                if allowed:
                    props[name] = {k: v for k, v in arg.items()
                                   if k not in ("minLength", "maxLength")}
                    props[name]["enum"] = allowed
    return out


def _last_user_text(messages: list[dict[str, str]]) -> str:
    return next((str(m.get("content", "")) for m in reversed(messages)
                 if m.get("role") == "user"), "")


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    for i in range(n):
        if any(s[i] != seqs[0][i] for s in seqs):
            return i
    return n


def _response_format(mode: str, json_schema: dict[str, Any]) -> dict[str, Any] | None:
    if mode == "json_schema":
        return {"type": "json_schema",
                "json_schema": {"name": "robot_command", "strict": True, "schema": json_schema}}
    if mode == "json_object":
        return {"type": "json_object", "schema": json_schema}
    return None
