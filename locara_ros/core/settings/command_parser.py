"""The command_parser node's parameters (README: command_parser, Parameters)."""
from __future__ import annotations

from dataclasses import dataclass

from locara_ros.core.parser import ParserConfig
from locara_ros.core.settings import Settings, setting


@dataclass(frozen=True)
class CommandParserSettings(Settings):
    schema_path: str = setting(
        "",
        "Command schema YAML; empty = the installed share/locara_ros/config/commands.yaml")
    backend: str = setting(
        "llama_cpp",
        "Model for what no sentence template decides: llama_cpp (local GGUF), openai "
        "(OpenAI-compatible chat server) or none (templates only: anything else is asked "
        "back)",
        choices=("llama_cpp", "openai", "none"))
    model_path: str = setting("", "GGUF file for llama_cpp; empty = packaged SmolLM2-135M-Instruct")
    n_ctx: int = setting(2048, "llama_cpp context length in tokens", limits=(256, 131072))
    threads: int = setting(0, "llama_cpp CPU threads; 0 = llama.cpp's default", limits=(0, 256))
    chat_format: str = setting("", "llama_cpp chat format; empty = the GGUF's template")
    constrained: bool = setting(
        True,
        "llama_cpp: grammar-constrained decoding derived from the schema")
    decode: str = setting(
        "two_stage",
        "llama_cpp: two_stage (score the candidate action names, then generate the chosen "
        "action's arguments) or grammar (one constrained pass)",
        choices=("two_stage", "grammar"))
    action_score: str = setting(
        "first",
        "llama_cpp two_stage: rank candidate actions by the log-likelihood of the name's "
        "first token (one evaluation for all when first tokens differ), or its mean or sum "
        "over the name")
    copy_free_text: bool = setting(
        True,
        "llama_cpp: free-text arguments (no enum) must be a span of the request's words")
    server_url: str = setting("", "openai: base URL, e.g. http://gpu:8080/v1")
    api_key: str = setting("", "openai: API key (empty = none)")
    server_model: str = setting("", "openai: model name to request")
    response_format: str = setting(
        "auto",
        "openai: json_schema, json_object, none or auto (json_schema, falling back on "
        "refusal; the accepted format is remembered)")
    server_timeout: float = setting(
        30.0,
        "openai: connect/read timeout in seconds (a server silent this long is taken as down)",
        limits=(0.1, 3600.0))
    fallback: str = setting(
        "",
        "openai: local backend used while the server is unreachable ('llama_cpp' with "
        "model_path; empty = none)",
        choices=("", "llama_cpp"))
    retry_interval: float = setting(
        5.0,
        "seconds between probes of an unreachable server",
        limits=(0.1, 3600.0))
    history_turns: int = setting(
        4,
        "Conversation turns kept as context (0 = none)",
        limits=(0, 100))
    history_mode: str = setting(
        "follow_up",
        "follow_up: give the model the history only for requests that refer back ('and "
        "now...', 'put it down', 'again'); always: for every request",
        choices=("follow_up", "always"))
    few_shot: int = setting(
        -1,
        "Schema examples in the prompt: -1 all, 0 none, n first",
        limits=(-1, 10000))
    few_shot_select: str = setting(
        "all",
        "Example choice: all (the same for every request: the prompt cache holds them), "
        "similar or all+similar",
        choices=("all", "similar", "all+similar"))
    few_shot_similar: int = setting(
        3,
        "Most similar examples repeated before the request (all+similar)",
        limits=(0, 100))
    normalize_numbers: bool = setting(
        True,
        "Rewrite spoken numbers as digits before the model sees the text")
    reply_source: str = setting(
        "template",
        "template: robot actions say the schema's reply; model: the model's reply",
        choices=("model", "template"))
    answer_source: str = setting(
        "known",
        "known: answers come from the schema and the clock, anything else is 'I don't know'; "
        "model: the model answers freely (only with a model good enough, e.g. a bigger GGUF "
        "or a server)",
        choices=("known", "model"))
    templates: bool = setting(True, "Decide by the schema's sentence templates first")
    model_fallback: bool = setting(
        True,
        "Ask the model what no template decides (false: ask the user back)")
    min_action_prob: float = setting(
        0.0,
        "Model path: an action less likely than this (among the candidates) is asked back; 0 "
        "= off",
        limits=(0.0, 1.0))
    reply_max_chars: int = setting(160, "Maximum reply length in characters", limits=(10, 10000))
    max_tokens: int = setting(160, "Maximum generated tokens per request", limits=(1, 8192))
    temperature: float = setting(0.0, "Sampling temperature (0 = greedy)", limits=(0.0, 2.0))
    generation_timeout_s: float = setting(
        30.0,
        "Give up on a generation after this many seconds",
        limits=(0.1, 3600.0))
    vision_timeout_s: float = setting(10.0, "Wait this long for vision/ask", limits=(0.1, 600.0))
    confirmation_timeout_s: float = setting(
        20.0,
        "A pending 'are you sure?' expires after this many seconds",
        limits=(0.1, 3600.0))
    max_text_chars: int = setting(400, "Longer requests are refused", limits=(1, 100000))
    stop_fast_path: bool = setting(
        True,
        "Recognise the schema's stop phrases without the model, in final and partial "
        "transcripts")
    stop_sounds_like: float = setting(
        0.25,
        "A spoken final that no rule makes a command of stops the robot when its sounds are "
        "this close to a stop phrase ('Alt.' for 'halt'; phoneme edit distance / phrase "
        "length); 0 = off",
        limits=(0.0, 0.5))
    queue_size: int = setting(
        4,
        "Requests waiting for the model; the oldest transcript is dropped when full",
        limits=(1, 1000))
    request_timeout: float = setting(
        60.0,
        "voice/parse answers success=false after this many seconds",
        limits=(0.1, 3600.0))
    parse_concurrency: int = setting(
        2,
        "voice/parse calls that may wait for the model at once; more are answered busy",
        limits=(1, 64))
    speculate: bool = setting(
        True,
        "Prepare the command from partial transcripts (COMMAND_READY); the final that agrees "
        "publishes it with no further work")
    vision_enabled: bool = setting(
        True,
        "Call vision/ask for vision actions; false = always 'I can't see right now'")
    vision_wait_s: float = setting(
        3.0,
        "A vision/ask service not (yet) discovered is waited for this long before the reply "
        "says no vision model is running",
        limits=(0.0, 600.0))
    worker_nice: int = setting(
        19,
        "CPU priority (nice, Linux) of the model worker thread and its compute threads: on a "
        "busy CPU the recognizer, the stop lane and the tts come first; 0 = normal",
        limits=(0, 19))
    warmup: bool = setting(True, "Run one generation at start-up to fill the prompt cache")

    def parser_config(self) -> ParserConfig:
        return ParserConfig(
            history_turns=self.history_turns, history_mode=self.history_mode,
            few_shot=self.few_shot, few_shot_select=self.few_shot_select,
            few_shot_similar=self.few_shot_similar, normalize_numbers=self.normalize_numbers,
            reply_source=self.reply_source, answer_source=self.answer_source,
            templates=self.templates, model_fallback=self.model_fallback,
            min_action_prob=self.min_action_prob, reply_max_chars=self.reply_max_chars,
            max_tokens=self.max_tokens, temperature=self.temperature,
            generation_timeout_s=self.generation_timeout_s,
            vision_timeout_s=self.vision_timeout_s,
            confirmation_timeout_s=self.confirmation_timeout_s,
            max_text_chars=self.max_text_chars, fast_path=self.stop_fast_path,
            stop_sounds_like=self.stop_sounds_like)
