"""Real test speech, made in the test set-up with the packaged Piper voice (no recordings, no
network). Shared by tests, benchmarks and tools:
`from locara_ros.testing.speech import synthesize, write_wav`.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from locara_ros.core.audio import resample
from locara_ros.core.models import resolve_piper_voice


@functools.lru_cache(maxsize=1)
def _voice():
    from piper import PiperVoice
    return PiperVoice.load(str(resolve_piper_voice()[0]))


def synthesize(text: str, rate: int = 16000, length_scale: float | None = None,
               varied: bool = False) -> np.ndarray:
    """Speak `text` with Piper en_US-joe; mono float32 at `rate`.

    By default the same text is always the same audio (Piper's noise scales at 0), so a test
    hears what it heard last time: with the voice's random noise on, one rendition in some tens
    was misheard by tiny.en or left an echo residue the VAD took for speech, and tests failed at
    random. `varied=True` (benchmarks) keeps the voice's natural variation: each call is a new
    rendition, as a person never says a sentence twice the same way."""
    from piper import SynthesisConfig
    voice = _voice()
    if varied:
        cfg = SynthesisConfig(length_scale=length_scale)
    else:
        cfg = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize(text, cfg)])
    return resample(audio.astype(np.float32), voice.config.sample_rate, rate)


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(round(seconds * rate)), dtype=np.float32)


def noise(seconds: float, rate: int = 16000, dbfs: float = -50.0, seed: int = 0) -> np.ndarray:
    """White noise at a given RMS level (background hiss, fans)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(round(seconds * rate))) * 10 ** (dbfs / 20)).astype(np.float32)


def conversation(phrases: Sequence[str], rate: int = 16000, lead: float = 0.5, gap: float = 1.2,
                 tail: float = 1.0, noise_dbfs: float | None = None) -> np.ndarray:
    """Phrases separated by silence (optionally with background noise), mono float32."""
    parts = [silence(lead, rate)]
    for i, phrase in enumerate(phrases):
        parts.append(synthesize(phrase, rate))
        parts.append(silence(gap if i < len(phrases) - 1 else tail, rate))
    audio = np.concatenate(parts)
    if noise_dbfs is not None:
        audio = audio + noise(audio.size / rate, rate, noise_dbfs)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def write_wav(path: str | Path, audio: np.ndarray, rate: int = 16000, channels: int = 1,
              subtype: str = "PCM_16") -> Path:
    """Write mono audio; channels > 1 duplicates it with a different gain per channel."""
    data = audio
    if channels > 1:
        gains = np.linspace(1.0, 0.6, channels, dtype=np.float32)
        data = np.stack([audio * g for g in gains], axis=1)
    sf.write(str(path), data, rate, subtype=subtype)
    return Path(path)
