"""One name per meaning across the nodes' parameters, and the renames that made it so.

The README's "Parameter names" table is generated from :data:`NAMES` (test_contract checks it);
`locara_ros.nodes.common.declare` declares a renamed parameter's old name too, so a parameters
file written for an older release still works: a value given only under the old name is used,
with a warning naming the new one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

MODEL_NODES = ("asr", "command_parser", "tts", "vlm")
SERVER_NODES = ("asr", "command_parser", "vlm")


@dataclass(frozen=True)
class Name:
    name: str
    meaning: str
    nodes: tuple[str, ...]
    renamed_from: Mapping[str, str] = field(default_factory=dict)  # node -> old name


NAMES: tuple[Name, ...] = (
    Name("autostart", "configure and activate at start-up (false: wait for `ros2 lifecycle`)",
         MODEL_NODES),
    Name("threads", "CPU threads of the node's model runtime (CTranslate2, llama.cpp, "
                    "onnxruntime); 0 = the runtime's default", MODEL_NODES,
         {"command_parser": "n_threads", "vlm": "n_threads"}),
    Name("compute_device", "where the model runs: cpu, cuda or auto", ("asr",),
         {"asr": "device"}),
    Name("device", "the PortAudio device: index or part of its name; empty = the default",
         ("mic_capture", "tts")),
    Name("server_url", "OpenAI-compatible server, e.g. http://gpu:8080/v1", SERVER_NODES),
    Name("api_key", "bearer token for the server (empty = none)", SERVER_NODES),
    Name("server_model", "model name sent to the server", SERVER_NODES),
    Name("server_timeout", "seconds one server request may take before the server counts as "
                           "down", SERVER_NODES, {"command_parser": "request_timeout_s"}),
    Name("fallback", "local backend used while the server is unreachable (empty = none)",
         SERVER_NODES),
    Name("retry_interval", "seconds between probes of an unreachable server", SERVER_NODES),
    Name("request_timeout", "seconds a service call waits for its answer; then it is answered "
                            "success=false", ("command_parser", "vlm"),
         {"command_parser": "service_timeout_s"}),
    Name("model_path", "GGUF file (empty = the packaged model, where there is one)",
         ("command_parser", "vlm")),
    Name("n_ctx", "llama.cpp context length in tokens", ("command_parser", "vlm")),
    Name("max_tokens", "default generation length in tokens", ("command_parser", "vlm")),
    Name("temperature", "sampling temperature (0 = greedy, reproducible)",
         ("command_parser", "vlm")),
    Name("worker_nice", "CPU priority (nice) of the model worker thread",
         ("command_parser", "vlm")),
    Name("schema_path", "command schema YAML (empty = the installed config/commands.yaml)",
         ("asr", "command_parser")),
    Name("max_text_chars", "longest accepted request or text", ("command_parser", "tts")),
    Name("frame_id", "header.frame_id of what the node publishes", ("asr", "mic_capture", "tts")),
)


def renamed(node: str) -> dict[str, str]:
    """new name -> old name for one node."""
    return {n.name: n.renamed_from[node] for n in NAMES if node in n.renamed_from}


def names_of(node: str) -> list[str]:
    return [n.name for n in NAMES if node in n.nodes]


def markdown_table() -> str:
    rows = ["| parameter | meaning | nodes | was |", "|---|---|---|---|"]
    for n in NAMES:
        was = ", ".join(f"`{old}` ({node})" for node, old in n.renamed_from.items())
        rows.append(f"| `{n.name}` | {n.meaning} | {', '.join(n.nodes)} | {was} |")
    return "\n".join(rows)
