"""Vision-language models behind one small interface: an RGB image and a question in, text out.

* :class:`LlamaCppVision` - a GGUF model plus its mmproj (image encoder + projector) run by
  llama-cpp-python's multimodal chat handlers (llama.cpp's libmtmd).
* :class:`OpenAIVision` - any OpenAI-compatible ``/v1/chat/completions`` server that takes
  ``image_url`` parts (llama-server with ``--mmproj``, vLLM, LiteLLM, llama-swap).

Both take the frame as an (H, W, 3) uint8 RGB array, shrink it with OpenCV to the model's input
size and hand it over as a base64 data URI. Calls block: run them on a worker thread.
"""
from __future__ import annotations

import abc
import logging
import os
import threading
from typing import Any

import numpy as np

from locara_ros.core.backends.openai_http import (
    BackendError,
    OpenAIClient,
    ServerConfig,
    chat_content,
)
from locara_ros.core.models import user_path
from locara_ros.core.vision import check_rgb, data_uri, resize_to_fit

log = logging.getLogger(__name__)

# Chat handler families (parameter value -> llama_cpp.llama_chat_format class name).
CHAT_HANDLERS = {
    "moondream": "MoondreamChatHandler",  # Moondream2 (mlp projector, phi-2 text model)
    "qwen25vl": "Qwen25VLChatHandler",  # Qwen2.5-VL 3B/7B
    "llava15": "Llava15ChatHandler",  # LLaVA-1.5, BakLLaVA, and the test's tiny model
    "mtmd": "MTMDChatHandler",  # generic: the model's own chat template (SmolVLM, Gemma 3, ...)
}
# Longest image side sent to a server when the model's input size is unknown.
DEFAULT_REMOTE_IMAGE_SIZE = 768


class VisionModel(abc.ABC):
    """Answers a question about one image."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Backend and model, e.g. "llama_cpp:moondream" or "openai:http://gpu:8080/v1"."""

    @abc.abstractmethod
    def answer(self, image_rgb: np.ndarray, question: str, max_tokens: int) -> str:
        """The model's answer; BackendError (or BackendUnavailable) when it cannot give one."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model (default: nothing to free)."""


def _messages(image_url: str, question: str, system_prompt: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_url}},
        {"type": "text", "text": question},
    ]})
    return messages


def mmproj_image_size(mmproj_path: str | os.PathLike) -> int:
    """The encoder's input size (clip.vision.image_size) from an mmproj GGUF, 0 if unknown."""
    try:
        import gguf  # optional: ships with llama.cpp's tooling, used only for this look-up
    except ImportError:
        return 0
    try:
        reader = gguf.GGUFReader(str(mmproj_path))
        field = reader.get_field("clip.vision.image_size")
        return int(field.contents()) if field is not None else 0
    except Exception as e:  # noqa: BLE001 - an unreadable header is reported by the real loader
        log.debug("could not read clip.vision.image_size from %s: %s", mmproj_path, e)
        return 0


def _quiet_mtmd_logs() -> None:
    """Send libmtmd's per-image chatter through llama-cpp-python's log filter (errors only unless
    llama-cpp-python is verbose) instead of straight to stderr."""
    try:
        from llama_cpp import _logger, mtmd_cpp
        mtmd_cpp.mtmd_log_set(_logger.llama_log_callback, None)
        mtmd_cpp.mtmd_helper_log_set(_logger.llama_log_callback, None)
    except (ImportError, AttributeError, TypeError) as e:  # other versions: keep the chatter
        log.debug("cannot redirect libmtmd logs: %s", e)


class LlamaCppVision(VisionModel):
    """A GGUF vision-language model (text GGUF + mmproj GGUF) in llama-cpp-python."""

    def __init__(self, model_path: str | os.PathLike, mmproj_path: str | os.PathLike, *,
                 chat_handler: str = "mtmd", n_ctx: int = 4096, n_threads: int = 0,
                 image_size: int = 0, n_gpu_layers: int = 0, temperature: float = 0.0,
                 system_prompt: str = "", jpeg_quality: int = 90, seed: int = 0) -> None:
        if chat_handler not in CHAT_HANDLERS:
            raise ValueError(f"chat_handler must be one of {', '.join(CHAT_HANDLERS)}, "
                             f"got '{chat_handler}'")
        model = user_path(model_path, "VLM text model GGUF (model_path)")
        mmproj = user_path(mmproj_path, "VLM projector GGUF (mmproj_path)")
        self.handler_name = chat_handler
        self.temperature = float(temperature)
        self.system_prompt = system_prompt
        self.jpeg_quality = int(jpeg_quality)
        self.image_size = int(image_size) or mmproj_image_size(mmproj)
        self._lock = threading.Lock()
        try:
            import llama_cpp
            from llama_cpp import llama_chat_format
        except ImportError as e:
            raise RuntimeError(f"llama-cpp-python is not installed ({e}); "
                               "pip install llama-cpp-python") from e
        handler_cls = getattr(llama_chat_format, CHAT_HANDLERS[chat_handler], None)
        if handler_cls is None:
            raise RuntimeError(f"this llama-cpp-python ({llama_cpp.__version__}) has no "
                               f"{CHAT_HANDLERS[chat_handler]}; upgrade it or pick another "
                               "chat_handler")
        _quiet_mtmd_logs()
        threads = int(n_threads) or max(1, min(8, os.cpu_count() or 1))
        try:
            handler = handler_cls(clip_model_path=str(mmproj), verbose=False)
            self._llm = llama_cpp.Llama(model_path=str(model), chat_handler=handler,
                                        n_ctx=int(n_ctx), n_threads=threads,
                                        n_gpu_layers=int(n_gpu_layers), seed=int(seed),
                                        verbose=False)
        except Exception as e:  # name the files and the reason
            raise RuntimeError(f"cannot load VLM '{model}': {type(e).__name__}: {e}") from e
        # The handlers load the mmproj lazily on the first question; load it now so a bad
        # projector fails at start-up, not in the middle of a request.
        try:
            handler._init_mtmd_context(self._llm)
        except Exception as e:
            self._llm.close()
            raise RuntimeError(f"cannot load VLM projector '{mmproj}' for '{model}' "
                               f"({chat_handler}): {e} (is it the mmproj that belongs to "
                               "this model?)") from e
        self.model_path, self.mmproj_path = model, mmproj

    @property
    def name(self) -> str:
        return f"llama_cpp:{self.handler_name}"

    def answer(self, image_rgb: np.ndarray, question: str, max_tokens: int) -> str:
        check_rgb(image_rgb)
        url = data_uri(resize_to_fit(image_rgb, self.image_size), "jpeg", self.jpeg_quality)
        with self._lock:
            try:
                out = self._llm.create_chat_completion(
                    messages=_messages(url, question, self.system_prompt),
                    max_tokens=int(max_tokens), temperature=self.temperature)
            except Exception as e:  # llama.cpp raises ValueError etc.
                raise BackendError(f"{self.name}: {type(e).__name__}: {e}") from e
        return chat_content(out).strip()

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None:
            llm.close()
            self._llm = None


class OpenAIVision(VisionModel):
    """An OpenAI-compatible server; the image goes as a base64 JPEG data URI in image_url."""

    def __init__(self, config: ServerConfig, *, image_size: int = 0, temperature: float = 0.0,
                 system_prompt: str = "", jpeg_quality: int = 90) -> None:
        self.client = OpenAIClient(config)
        self.image_size = int(image_size) or DEFAULT_REMOTE_IMAGE_SIZE
        self.temperature = float(temperature)
        self.system_prompt = system_prompt
        self.jpeg_quality = int(jpeg_quality)

    @property
    def name(self) -> str:
        return f"openai:{self.client.url}"

    def answer(self, image_rgb: np.ndarray, question: str, max_tokens: int) -> str:
        check_rgb(image_rgb)
        url = data_uri(resize_to_fit(image_rgb, self.image_size), "jpeg", self.jpeg_quality)
        out = self.client.chat(_messages(url, question, self.system_prompt),
                               max_tokens=int(max_tokens), temperature=self.temperature)
        return chat_content(out).strip()


def make_vision_model(backend: str, *, model_path: str = "", mmproj_path: str = "",
                      chat_handler: str = "mtmd", server_url: str = "", api_key: str = "",
                      server_model: str = "", server_timeout: float = 60.0, **options: Any,
                      ) -> VisionModel:
    """Build the configured backend; the error says what is missing and how to configure it."""
    if backend == "llama_cpp":
        if not model_path or not mmproj_path:
            raise ValueError(
                "no vision-language model configured, and none is packaged with locara_ros (no "
                "VLM weights exist on PyPI). Download a GGUF VLM and its mmproj (e.g. "
                "moondream2-text-model-f16.gguf + moondream2-mmproj-f16.gguf, or "
                "Qwen2.5-VL-3B-Instruct-Q4_K_M.gguf + its mmproj) and set the parameters "
                "model_path:=... mmproj_path:=... chat_handler:=moondream|qwen25vl|llava15|mtmd, "
                "or use a server: backend:=openai server_url:=http://<host>:8080/v1 "
                "(see the README, vlm node)")
        return LlamaCppVision(model_path, mmproj_path, chat_handler=chat_handler, **options)
    if backend == "openai":
        if not server_url:
            raise ValueError("backend 'openai' needs server_url, e.g. http://gpu-server:8080/v1")
        remote = {k: v for k, v in options.items()
                  if k in ("image_size", "temperature", "system_prompt", "jpeg_quality")}
        return OpenAIVision(ServerConfig(server_url, api_key=api_key, model=server_model,
                                         timeout=float(server_timeout)), **remote)
    raise ValueError(f"backend must be 'llama_cpp' or 'openai', got '{backend}'")


__all__ = ["CHAT_HANDLERS", "LlamaCppVision", "OpenAIVision", "VisionModel",
           "make_vision_model", "mmproj_image_size"]
