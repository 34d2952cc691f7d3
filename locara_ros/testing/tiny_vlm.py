"""A tiny random-weight vision-language model, generated for tests and benchmarks.

No vision-language weights can be installed from any registry this project reaches, so the tests
build one: a pair of GGUF files written with the ``gguf`` package, in one of two families.

``llava15`` (default; also used with the ``moondream`` and ``mtmd`` chat handlers):

* ``tiny-llava15-text.gguf``: a 2-layer llama text model (n_embd 64) with random weights and the
  real tokenizer of the packaged SmolLM2-135M-Instruct (copied with ``gguf.GGUFReader``), so
  prompts tokenize as they would for a real model;
* ``tiny-llava15-mmproj.gguf``: a CLIP-style ViT (32x32 input, 8x8 patches, 2 blocks) with
  LLaVA's 2-layer "mlp" projector into the text model's embedding space.

``qwen25vl`` (for the ``qwen25vl`` chat handler):

* a 2-layer ``qwen2vl`` text model (q/k/v biases, M-RoPE with 4 rope sections), same tokenizer;
* a Qwen2.5-VL-style ViT (two temporal patch-embedding slices, RMS norms, gated SiLU FFN, no
  position table: 2-D M-RoPE inside the encoder) with the ``qwen2.5vl_merger`` projector (2x2
  patch merge + MLP); images are tokenized at their own size (dynamic resolution).

An image then runs through llama.cpp's real image pre-processing, ViT encoder, projector and
text generation. The answers are meaningless (random weights); the machinery is real. The files
are NOT a model anyone should use, and nothing in the package ships or refers to them.

    python locara_ros/testing/tiny_vlm.py OUT_DIR [llava15|qwen25vl]   # writes a pair, prints paths
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

# Bump when the layout changes so cached copies are regenerated.
VERSION = 3
# family -> chat handler of locara_ros.core.backends.vision that fits it. The llava15 pair also
# works with "moondream" and "mtmd" (same projector, different prompt templates).
FAMILIES = {"llava15": "llava15", "qwen25vl": "qwen25vl"}

# Text model.
N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_CTX_TRAIN = 8192
# Large enough that attention really mixes the image tokens into the answer (checked by a test:
# different images give different answers).
ATTN_SCALE = 0.3
# The donor's chat template only takes string contents; multimodal models' templates (SmolVLM,
# Qwen2.5-VL, Gemma 3) also take a list of parts, which the generic MTMD handler relies on.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Vision encoder.
IMAGE_SIZE = 32
PATCH_SIZE = 8
V_EMBD = 32
V_FF = 64
V_LAYER = 2
V_HEAD = 2
MM_HIDDEN = 64
# Qwen2.5-VL encoder: 4x4 patches (merged 2x2 into one token), so a 64x48 image gives 48 tokens.
Q_PATCH_SIZE = 4


def _rand(rng: np.random.Generator, *shape: int, scale: float = 0.05,
          dtype: type = np.float32) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _smollm2_path() -> Path:
    # The packaged SmolLM2 GGUF donates its tokenizer (vocab, merges, special ids, chat template).
    from locara_ros.core.models import resolve_llm
    return resolve_llm()


def _copy_tokenizer(writer, donor: Path) -> int:
    """Copy every tokenizer.* key of the donor GGUF; returns the vocabulary size."""
    import gguf
    reader = gguf.GGUFReader(str(donor))
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.") or key == "tokenizer.chat_template":
            continue
        value = field.contents()
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[-1]
            writer.add_key_value(key, value, vtype, sub_type=sub)
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(value)
        else:
            writer.add_key_value(key, value, vtype)
    if not n_vocab:
        raise RuntimeError(f"{donor}: no tokenizer.ggml.tokens to copy")
    return n_vocab


def _write_text_model(path: Path, rng: np.random.Generator, family: str) -> None:
    import gguf
    qwen = family == "qwen25vl"
    w = gguf.GGUFWriter(str(path), "qwen2vl" if qwen else "llama")
    w.add_name(f"locara tiny random {family} VLM text model (test only)")
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    head_dim = N_EMBD // N_HEAD
    if qwen:  # M-RoPE: temporal, height, width (+ unused) sections of head_dim / 2
        w.add_array("qwen2vl.rope.dimension_sections", [2, 3, 3, 0])
    else:
        w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = _copy_tokenizer(w, _smollm2_path())
    w.add_chat_template(CHAT_TEMPLATE)
    w.add_vocab_size(n_vocab)
    # numpy shapes are (rows=out, cols=in); ggml sees them reversed.
    w.add_tensor("token_embd.weight", _rand(rng, n_vocab, N_EMBD, scale=0.5, dtype=np.float16))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
    # An untied output head: with tied embeddings a random model just repeats its last token.
    w.add_tensor("output.weight", _rand(rng, n_vocab, N_EMBD, scale=0.5, dtype=np.float16))
    for i in range(N_LAYER):
        p = f"blk.{i}"
        w.add_tensor(f"{p}.attn_norm.weight", np.ones(N_EMBD, np.float32))
        w.add_tensor(f"{p}.attn_q.weight", _rand(rng, N_EMBD, N_EMBD, scale=ATTN_SCALE))
        w.add_tensor(f"{p}.attn_k.weight",
                     _rand(rng, N_HEAD_KV * head_dim, N_EMBD, scale=ATTN_SCALE))
        w.add_tensor(f"{p}.attn_v.weight",
                     _rand(rng, N_HEAD_KV * head_dim, N_EMBD, scale=ATTN_SCALE))
        w.add_tensor(f"{p}.attn_output.weight", _rand(rng, N_EMBD, N_EMBD, scale=ATTN_SCALE))
        if qwen:
            for name, size in (("attn_q", N_EMBD), ("attn_k", N_HEAD_KV * head_dim),
                               ("attn_v", N_HEAD_KV * head_dim)):
                w.add_tensor(f"{p}.{name}.bias", np.zeros(size, np.float32))
        w.add_tensor(f"{p}.ffn_norm.weight", np.ones(N_EMBD, np.float32))
        w.add_tensor(f"{p}.ffn_gate.weight", _rand(rng, N_FF, N_EMBD))
        w.add_tensor(f"{p}.ffn_up.weight", _rand(rng, N_FF, N_EMBD))
        w.add_tensor(f"{p}.ffn_down.weight", _rand(rng, N_EMBD, N_FF))
    _finish(w)


def _write_mmproj_llava(path: Path, rng: np.random.Generator) -> None:
    import gguf
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_name("locara tiny random llava15 VLM projector (test only)")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_llava_projector", True)
    w.add_string("clip.projector_type", "mlp")
    w.add_bool("clip.use_gelu", True)
    w.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    w.add_uint32("clip.vision.patch_size", PATCH_SIZE)
    w.add_uint32("clip.vision.embedding_length", V_EMBD)
    w.add_uint32("clip.vision.feed_forward_length", V_FF)
    w.add_uint32("clip.vision.projection_dim", N_EMBD)
    w.add_uint32("clip.vision.block_count", V_LAYER)
    w.add_uint32("clip.vision.attention.head_count", V_HEAD)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
    w.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])
    n_pos = (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1  # patches + class token
    w.add_tensor("v.patch_embd.weight", _rand(rng, V_EMBD, 3, PATCH_SIZE, PATCH_SIZE, scale=0.1))
    w.add_tensor("v.class_embd", _rand(rng, V_EMBD, scale=0.1))
    w.add_tensor("v.position_embd.weight", _rand(rng, n_pos, V_EMBD, scale=0.1))
    w.add_tensor("v.pre_ln.weight", np.ones(V_EMBD, np.float32))
    w.add_tensor("v.pre_ln.bias", np.zeros(V_EMBD, np.float32))
    for i in range(V_LAYER):
        p = f"v.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(f"{p}.{name}.weight", _rand(rng, V_EMBD, V_EMBD))
            w.add_tensor(f"{p}.{name}.bias", np.zeros(V_EMBD, np.float32))
        for name in ("ln1", "ln2"):
            w.add_tensor(f"{p}.{name}.weight", np.ones(V_EMBD, np.float32))
            w.add_tensor(f"{p}.{name}.bias", np.zeros(V_EMBD, np.float32))
        w.add_tensor(f"{p}.ffn_up.weight", _rand(rng, V_FF, V_EMBD))
        w.add_tensor(f"{p}.ffn_up.bias", np.zeros(V_FF, np.float32))
        w.add_tensor(f"{p}.ffn_down.weight", _rand(rng, V_EMBD, V_FF))
        w.add_tensor(f"{p}.ffn_down.bias", np.zeros(V_EMBD, np.float32))
    w.add_tensor("mm.0.weight", _rand(rng, MM_HIDDEN, V_EMBD, scale=0.2))
    w.add_tensor("mm.0.bias", np.zeros(MM_HIDDEN, np.float32))
    w.add_tensor("mm.2.weight", _rand(rng, N_EMBD, MM_HIDDEN, scale=0.2))
    w.add_tensor("mm.2.bias", np.zeros(N_EMBD, np.float32))
    _finish(w)


def _write_mmproj_qwen25vl(path: Path, rng: np.random.Generator) -> None:
    import gguf
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_name("locara tiny random qwen25vl VLM projector (test only)")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_string("clip.projector_type", "qwen2.5vl_merger")
    w.add_bool("clip.use_silu", True)
    w.add_uint32("clip.vision.image_size", IMAGE_SIZE)
    w.add_uint32("clip.vision.patch_size", Q_PATCH_SIZE)
    w.add_uint32("clip.vision.embedding_length", V_EMBD)
    w.add_uint32("clip.vision.feed_forward_length", V_FF)
    w.add_uint32("clip.vision.projection_dim", N_EMBD)
    w.add_uint32("clip.vision.block_count", V_LAYER)
    w.add_uint32("clip.vision.attention.head_count", V_HEAD)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    w.add_uint32("clip.vision.n_wa_pattern", 0)  # full attention in every block
    w.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
    w.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])
    for name in ("v.patch_embd.weight", "v.patch_embd.weight.1"):  # two temporal slices
        w.add_tensor(name, _rand(rng, V_EMBD, 3, Q_PATCH_SIZE, Q_PATCH_SIZE, scale=0.1))
    for i in range(V_LAYER):
        p = f"v.blk.{i}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            w.add_tensor(f"{p}.{name}.weight", _rand(rng, V_EMBD, V_EMBD))
            w.add_tensor(f"{p}.{name}.bias", np.zeros(V_EMBD, np.float32))
        for name in ("ln1", "ln2"):  # RMS norms: weights only
            w.add_tensor(f"{p}.{name}.weight", np.ones(V_EMBD, np.float32))
        for name, rows, cols in (("ffn_up", V_FF, V_EMBD), ("ffn_gate", V_FF, V_EMBD),
                                 ("ffn_down", V_EMBD, V_FF)):
            w.add_tensor(f"{p}.{name}.weight", _rand(rng, rows, cols))
            w.add_tensor(f"{p}.{name}.bias", np.zeros(rows, np.float32))
    w.add_tensor("v.post_ln.weight", np.ones(V_EMBD, np.float32))
    merged = 4 * V_EMBD  # 2x2 neighbouring patches concatenated
    w.add_tensor("mm.0.weight", _rand(rng, merged, merged, scale=0.2))
    w.add_tensor("mm.0.bias", np.zeros(merged, np.float32))
    w.add_tensor("mm.2.weight", _rand(rng, N_EMBD, merged, scale=0.2))
    w.add_tensor("mm.2.bias", np.zeros(N_EMBD, np.float32))
    _finish(w)


def _finish(w) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def make_tiny_vlm(out_dir: str | os.PathLike, family: str = "llava15", seed: int = 0
                  ) -> tuple[Path, Path, str]:
    """Write (or reuse) a tiny model pair in out_dir; returns (text_gguf, mmproj_gguf, handler).

    Files are written under temporary names and renamed into place, so concurrent callers and
    interrupted runs never see a partial file.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got '{family}'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text, mmproj = out / f"tiny-{family}-text.gguf", out / f"tiny-{family}-mmproj.gguf"
    stamp = out / f"tiny-{family}.json"
    want = {"version": VERSION, "seed": seed}
    if text.is_file() and mmproj.is_file() and stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == want:
                return text, mmproj, FAMILIES[family]
        except ValueError:
            pass
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(dir=out, prefix=".tiny-vlm-") as tmp:
        t_tmp, m_tmp = Path(tmp) / text.name, Path(tmp) / mmproj.name
        _write_text_model(t_tmp, rng, family)
        if family == "qwen25vl":
            _write_mmproj_qwen25vl(m_tmp, rng)
        else:
            _write_mmproj_llava(m_tmp, rng)
        os.replace(t_tmp, text)
        os.replace(m_tmp, mmproj)
    stamp.write_text(json.dumps(want))
    return text, mmproj, FAMILIES[family]


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR [{'|'.join(FAMILIES)}]")
    for item in make_tiny_vlm(*sys.argv[1:]):
        print(item)
