"""The model's prompt for the command parser (no rclpy).

The system prompt and the examples are built once from the schema and are the same for every
request, so a local model's KV cache holds them and a request evaluates only its own tokens.
"""
from __future__ import annotations

from locara_ros.core.command_schema import (
    CLARIFY,
    ActionSpec,
    CommandSchema,
    Example,
    normalize_words,
)
from locara_ros.core.conversation import output_json

def system_prompt(schema: CommandSchema) -> str:
    lines = [f"You are the command parser of {schema.robot}. For each user request, answer with "
             "exactly one JSON object: "
             '{"action": ..., "arguments": {...}, "reply": "..."}. '
             "Use only these actions:"]
    for spec in schema.actions.values():
        args = ", ".join(a.prompt_text() for a in spec.arguments) or "none"
        lines.append(f"- {spec.name}: {spec.description} Arguments: {args}.")
    lines.append(f"- {CLARIFY}: the request is unclear, impossible or not covered above. "
                 "Arguments: none. The reply asks a short question.")
    lines.append("The reply is one short spoken sentence. Earlier turns give context: "
                 '"again" or "and now ..." refer to the previous command.')
    return "\n".join(lines)


def example_reply(spec: ActionSpec, ex: Example) -> str:
    if ex.reply:
        return ex.reply
    if spec.handler == "say":
        return str(ex.arguments.get("text", ""))
    if spec.handler == "vision":
        return "Let me look."
    return spec.render_reply(ex.arguments) or "Okay."


def _overlap(a: str, b: str) -> float:
    wa, wb = set(normalize_words(a).split()), set(normalize_words(b).split())
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / len(wa | wb)


def few_shot_messages(schema: CommandSchema, text: str, count: int = -1,
                      select: str = "all", similar: int = 3) -> list[dict[str, str]]:
    """Example turns for the prompt, built from the schema's example utterances.

    select: "all" - the first `count` examples (-1: all) in schema order (a fixed prefix, so the
    model's prompt cache makes it cheap); "similar" - the `count` examples sharing the most words
    with the request, most similar last (small models copy what they saw last; the prefix changes
    every request); "all+similar" - the fixed prefix, then the `similar` most similar examples
    repeated just before the request (cache-friendly and nearly as sharp).
    """
    pairs = [(spec, ex) for spec in schema.actions.values() for ex in spec.examples]
    ranked = sorted(pairs, key=lambda p: _overlap(p[1].text, text))
    if select == "similar":
        chosen = ranked[len(ranked) - count:] if count > 0 else (ranked if count < 0 else [])
    else:
        chosen = pairs if count < 0 else pairs[:count]
        if select == "all+similar" and similar > 0:
            chosen = chosen + [p for p in ranked[-similar:] if _overlap(p[1].text, text) > 0]
    out: list[dict[str, str]] = []
    for spec, ex in chosen:
        out.append({"role": "user", "content": ex.text})
        out.append({"role": "assistant",
                    "content": output_json(spec.name, dict(ex.arguments),
                                            example_reply(spec, ex))})
    return out
