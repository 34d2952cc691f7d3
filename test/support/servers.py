"""Real OpenAI-compatible servers from PyPI, run on loopback for tests and benchmarks."""
from __future__ import annotations

import json
import socket
import sys
import urllib.request

import numpy as np

from locara_ros.core.backends.asr import OpenAITranscriptionTranscriber
from locara_ros.core.backends.openai_http import ServerConfig
from locara_ros.core.models import resolve_llm, resolve_whisper
from locara_ros.testing.inprocess import wait_until
from locara_ros.testing.processes import NodeProcess

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


def whisper_server(log_dir: str, port: int | None = None, model: str = "tiny.en",
                   label: str = "faster-whisper-server") -> tuple[NodeProcess, str]:
    """faster-whisper-server 0.0.3 serving a packaged Whisper directory (never downloads).
    Returns the started process and its base URL (…/v1) once /health answers."""
    port = port or free_port()
    proc = NodeProcess([sys.executable, "-m", "faster_whisper_server", str(resolve_whisper(model)),
                        "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"],
                       label=label, log_dir=log_dir, env=OFFLINE_ENV,
                       ready_pattern="Uvicorn running on")
    proc.start().wait_ready(60)
    wait_until(lambda: _fws_health(port), 30, what="faster-whisper-server /health")
    url = f"http://127.0.0.1:{port}/v1"
    # The server loads its model on the first request: do that now, not in the test.
    OpenAITranscriptionTranscriber(ServerConfig(base_url=url, timeout=120.0)).transcribe(
        np.zeros(16000, dtype=np.float32))
    return proc, url


def _fws_health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return json.loads(r.read()).get("status") == "ok"
    except OSError:
        return False


def llama_server(log_dir: str, port: int | None = None, model: str = "",
                 extra: tuple[str, ...] = (), label: str = "llama-cpp-server",
                 ) -> tuple[NodeProcess, str]:
    """llama-cpp-python's OpenAI-compatible server (python -m llama_cpp.server) on loopback,
    serving a GGUF (default: the packaged SmolLM2). Returns the process and its base URL."""
    port = port or free_port()
    proc = NodeProcess([sys.executable, "-m", "llama_cpp.server", "--model",
                        model or str(resolve_llm()), "--host", "127.0.0.1", "--port", str(port),
                        "--n_ctx", "2048", *extra],
                       label=label, log_dir=log_dir, env=OFFLINE_ENV,
                       ready_pattern="Uvicorn running on")
    proc.start().wait_ready(120)
    url = f"http://127.0.0.1:{port}/v1"
    wait_until(lambda: http_ok(f"{url}/models"), 30, what="llama_cpp.server /v1/models")
    return proc, url
