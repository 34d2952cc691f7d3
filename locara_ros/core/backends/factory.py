"""Backend factories: a node's settings -> its model backends (no ROS).

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
from locara_ros.core.backends.openai_http import OpenAIClient, ServerConfig
from locara_ros.core.models import resolve_whisper
from locara_ros.core.settings.asr import AsrSettings


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
