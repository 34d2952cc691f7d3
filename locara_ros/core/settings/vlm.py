"""The vlm node's parameters (README: Vision, Parameters)."""
from __future__ import annotations

from dataclasses import dataclass

from locara_ros.core.backends.vision import CHAT_HANDLERS
from locara_ros.core.settings import Settings, setting
from locara_ros.core.vision import MAX_PIXELS

# Each held request blocks one executor thread while it waits, so max_queue is capped and the
# executor gets that many threads plus room for the camera callbacks and refusals.
MAX_QUEUE_LIMIT = 16


@dataclass(frozen=True)
class VlmSettings(Settings):
    backend: str = setting("llama_cpp", "'llama_cpp' (local GGUF + mmproj) or 'openai' (server)",
                           choices=("llama_cpp", "openai"))
    model_path: str = setting("", "llama_cpp: the VLM's text model GGUF (no VLM is packaged)")
    mmproj_path: str = setting("", "llama_cpp: the matching mmproj GGUF (image encoder+projector)")
    chat_handler: str = setting(
        "mtmd", f"llama_cpp prompt family: {', '.join(CHAT_HANDLERS)} (mtmd = model's template)")
    n_ctx: int = setting(4096, "llama_cpp: context length in tokens (image tokens included)",
                         limits=(512, 131072))
    threads: int = setting(0, "llama_cpp: CPU threads, 0 = min(8, CPU count)", limits=(0, 256))
    n_gpu_layers: int = setting(0, "llama_cpp: layers offloaded to the GPU (-1 = all; CUDA "
                                   "build)", limits=(-1, 1000))
    server_url: str = setting("", "openai: base URL, e.g. http://gpu-server:8080/v1")
    api_key: str = setting("", "openai: bearer token, if the server wants one")
    server_model: str = setting("", "openai: model name sent in requests ('' = 'default')")
    server_timeout: float = setting(60.0, "openai: seconds to wait for the server",
                                    limits=(0.1, 3600.0))
    fallback: str = setting("", "openai: 'llama_cpp' = answer with the local model_path/"
                                "mmproj_path while the server is unreachable; '' = no fallback",
                            choices=("", "llama_cpp"))
    retry_interval: float = setting(5.0, "seconds between probes of an unreachable server",
                                    limits=(0.1, 3600.0))
    image_size: int = setting(0, "longest image side sent to the model in pixels; 0 = the "
                                 "mmproj's input size (llama_cpp) or 768 (openai)",
                              limits=(0, 8192))
    max_pixels: int = setting(MAX_PIXELS, "frames declaring more pixels (width x height, read "
                                          "from the header) are refused without being decoded",
                              limits=(1, 1_000_000_000))
    jpeg_quality: int = setting(90, "JPEG quality of the frame handed to the model",
                                limits=(1, 100))
    temperature: float = setting(0.0, "sampling temperature (0 = greedy, reproducible)",
                                 limits=(0.0, 2.0))
    system_prompt: str = setting("", "optional system message before each question")
    max_frame_age: float = setting(1.0, "default oldest usable frame in seconds (by arrival "
                                        "time); a request's max_age > 0 overrides it",
                                   limits=(0.0, 3600.0))
    max_question_chars: int = setting(500, "longer questions are refused", limits=(1, 100000))
    max_tokens: int = setting(64, "default answer length in tokens (request max_tokens = 0)",
                              limits=(1, 8192))
    max_tokens_limit: int = setting(2048, "upper bound on a request's max_tokens",
                                    limits=(1, 32768))
    max_queue: int = setting(2, f"requests held at once, the one being answered included "
                                f"(1..{MAX_QUEUE_LIMIT}); more are refused as busy",
                             limits=(1, MAX_QUEUE_LIMIT))
    request_timeout: float = setting(60.0, "seconds a request waits for its answer",
                                     limits=(0.1, 3600.0))
    worker_nice: int = setting(0, "CPU priority (nice, Linux) of the model worker thread and its "
                                  "compute threads (0 = normal; 19 puts the voice pipeline "
                                  "first)", limits=(0, 19))
    subscribe_raw: bool = setting(True, "subscribe camera/image_raw (sensor_msgs/Image)")
    subscribe_compressed: bool = setting(
        True, "subscribe camera/image_raw/compressed (sensor_msgs/CompressedImage)")

    def check(self) -> None:
        if self.max_frame_age <= 0:
            raise ValueError("parameter max_frame_age must be > 0")
        if not (self.subscribe_raw or self.subscribe_compressed):
            raise ValueError("subscribe_raw and subscribe_compressed are both false: no camera")
