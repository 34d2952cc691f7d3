"""Backend factories: a node's settings -> its model backends (no ROS): the asr's transcriber,
the command parser's model, the vlm's vision model.

A remote backend comes with the local one to fall back on (or None) and the probe that tells
when the server is back; the node wraps them with `locara_ros.nodes.failover.with_failover`
(which adds its diagnostics and events).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from locara_ros.core.backends.asr import (
    ChatAudioTranscriber,
    FasterWhisperTranscriber,
    OpenAITranscriptionTranscriber,
    Transcriber,
)
from locara_ros.core.backends.chat import (
    RESPONSE_FORMATS,
    CommandModel,
    LlamaCppCommandModel,
    OpenAICommandModel,
)
from locara_ros.core.backends.openai_http import OpenAIClient, ServerConfig
from locara_ros.core.backends.vision import VisionModel, make_vision_model
from locara_ros.core.models import resolve_whisper
from locara_ros.core.settings.asr import AsrSettings
from locara_ros.core.settings.command_parser import CommandParserSettings
from locara_ros.core.settings.vlm import VlmSettings


@dataclass
class Remote:
    """A server backend, what to use while it is unreachable, and how to probe it."""

    backend: Any
    make_fallback: Callable[[], Any] | None
    probe: Callable[[], Any]


def local_transcriber(cfg: AsrSettings, hotwords: str = "") -> FasterWhisperTranscriber:
    path = resolve_whisper(cfg.model)  # ModelNotFoundError names the model and where it looked
    label = cfg.model if cfg.model in ("tiny.en", "base") else os.path.basename(
        str(path).rstrip("/"))
    return FasterWhisperTranscriber(path, label=label, compute_type=cfg.compute_type,
                                    device=cfg.compute_device, beam_size=cfg.beam_size,
                                    cpu_threads=cfg.threads, hotwords=hotwords)


def transcriber(cfg: AsrSettings, hotwords: str = "") -> Transcriber | Remote:
    """The asr's recognizer: local faster-whisper, or a server (Remote) to wrap with failover."""
    if cfg.backend == "faster_whisper":
        return local_transcriber(cfg, hotwords)
    if not cfg.server_url:
        raise ValueError(f"backend '{cfg.backend}' needs the server_url parameter "
                         "(e.g. http://gpu-server:8000/v1)")
    client = OpenAIClient(ServerConfig(base_url=cfg.server_url, api_key=cfg.api_key,
                                       model=cfg.server_model, timeout=float(cfg.server_timeout)))
    if cfg.backend == "openai":
        remote: Transcriber = OpenAITranscriptionTranscriber(client, model=cfg.server_model)
    elif cfg.backend == "chat_audio":
        remote = ChatAudioTranscriber(client, model=cfg.server_model,
                                      instruction=cfg.chat_instruction)
    else:
        raise ValueError(f"backend '{cfg.backend}' is not faster_whisper, openai or chat_audio")
    fallback = (lambda: local_transcriber(cfg, hotwords)) if cfg.fallback else None
    return Remote(remote, fallback, client.health)


def local_command_model(cfg: CommandParserSettings) -> LlamaCppCommandModel:
    """llama.cpp on a GGUF (model_path; empty = the packaged SmolLM2)."""
    return LlamaCppCommandModel(cfg.model_path, n_ctx=int(cfg.n_ctx), n_threads=int(cfg.threads),
                                chat_format=cfg.chat_format, constrained=bool(cfg.constrained),
                                decode=cfg.decode, action_score=cfg.action_score,
                                copy_free_text=bool(cfg.copy_free_text))


def command_model(cfg: CommandParserSettings) -> CommandModel | Remote | None:
    """The command parser's model: none (templates only), local llama.cpp, or an
    OpenAI-compatible server (Remote; its fallback only when `fallback` names one)."""
    if cfg.backend == "none":
        return None
    if cfg.backend == "llama_cpp":
        return local_command_model(cfg)
    if not cfg.server_url:
        raise ValueError("backend 'openai' needs the server_url parameter")
    if cfg.response_format not in RESPONSE_FORMATS:
        raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}")
    remote = OpenAICommandModel(cfg.server_url, api_key=cfg.api_key, model=cfg.server_model,
                                timeout_s=float(cfg.server_timeout),
                                response_format=cfg.response_format)
    fallback = (lambda: local_command_model(cfg)) if cfg.fallback else None
    return Remote(remote, fallback, remote.client.health)


def vision_model(cfg: VlmSettings) -> VisionModel | Remote:
    """The vlm's model: a local GGUF VLM with its mmproj, or an OpenAI-compatible server
    (Remote; its fallback only when `fallback` is set)."""
    local = dict(model_path=cfg.model_path, mmproj_path=cfg.mmproj_path,
                 chat_handler=cfg.chat_handler, n_ctx=cfg.n_ctx, n_threads=cfg.threads,
                 n_gpu_layers=cfg.n_gpu_layers, image_size=cfg.image_size,
                 temperature=cfg.temperature, system_prompt=cfg.system_prompt,
                 jpeg_quality=cfg.jpeg_quality)
    model = make_vision_model(cfg.backend, server_url=cfg.server_url, api_key=cfg.api_key,
                              server_model=cfg.server_model, server_timeout=cfg.server_timeout,
                              **local)
    if cfg.backend != "openai":
        return model
    fallback = (lambda: make_vision_model("llama_cpp", **local)) if cfg.fallback else None
    return Remote(model, fallback, model.client.health)
