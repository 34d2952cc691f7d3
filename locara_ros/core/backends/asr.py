"""Speech recognition backends behind one small interface.

A :class:`Transcriber` turns float32 mono 16 kHz audio into a :class:`TranscriptionResult`. It is
stateless between calls (chunking, partials and merging live in the caller), blocking, and meant
for a worker thread. Implementations:

* :class:`FasterWhisperTranscriber` - local faster-whisper (CTranslate2) model;
* :class:`OpenAITranscriptionTranscriber` - an OpenAI-compatible ``/audio/transcriptions`` server
  (faster-whisper-server, speaches, vLLM, LiteLLM, OpenAI);
* :class:`ChatAudioTranscriber` - an audio-language model behind ``/chat/completions`` with an
  ``input_audio`` content part (Qwen2-Audio, Ultravox on vLLM).

Remote failures raise :class:`BackendUnavailable` (unreachable, timeout) or :class:`BackendError`
(the server answered with an error or garbage), as every OpenAI-compatible backend does.
"""
from __future__ import annotations

import base64
import io
import logging
import math
import time
import wave
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from locara_ros.core.audio import encode_s16le
from locara_ros.core.backends.openai_http import (
    BackendError,
    BackendUnavailable,
    OpenAIClient,
    ServerConfig,
    chat_content,
)
from locara_ros.core.transcripts import clean_text

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000

__all__ = [
    "BackendError", "BackendUnavailable", "ChatAudioTranscriber", "FasterWhisperTranscriber",
    "OpenAITranscriptionTranscriber", "Segment", "Transcriber", "TranscriptionResult",
    "wav_bytes",
]


@dataclass
class Segment:
    start: float  # seconds from the start of the audio
    end: float
    text: str
    avg_logprob: float | None = None
    n_tokens: int = 0
    no_speech_prob: float | None = None


@dataclass
class TranscriptionResult:
    text: str  # whitespace-normalized
    confidence: float = 0.0  # geometric mean token probability in [0, 1]; 0 = unknown
    language: str = ""  # ISO 639-1, "" = unknown
    segments: list[Segment] = field(default_factory=list)
    duration: float = 0.0  # seconds of audio
    inference_time: float = 0.0  # seconds spent in the backend


class Transcriber(ABC):
    """Audio -> text. Implementations must be safe to call from one worker thread at a time."""

    name: str = "transcriber"

    @abstractmethod
    def transcribe(self, audio: np.ndarray, language: str | None = None,
                   prompt: str = "") -> TranscriptionResult:
        """Transcribe float32 mono 16 kHz audio; language None = detect."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release the model or connection (optional)."""


def _check_audio(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {x.shape}")
    return x


def confidence_from_segments(segments: Sequence[Segment]) -> float:
    """Geometric mean token probability over all segments (token-weighted)."""
    total, n = 0.0, 0
    for s in segments:
        if s.avg_logprob is None:
            continue
        k = max(s.n_tokens, 1)
        total += s.avg_logprob * k
        n += k
    if n == 0:
        return 0.0
    return float(min(1.0, max(0.0, math.exp(total / n))))


def wav_bytes(audio: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """float32 mono -> a 16-bit PCM WAV file in memory."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(encode_s16le(audio))
    return buf.getvalue()


# ---------------------------------------------------------------------------- local
class FasterWhisperTranscriber(Transcriber):
    """faster-whisper on a CTranslate2 Whisper model directory."""

    def __init__(self, model_dir: str | Path, *, label: str = "", compute_type: str = "int8",
                 device: str = "cpu", beam_size: int = 1, cpu_threads: int = 0,
                 hotwords: str = "") -> None:
        from faster_whisper import WhisperModel
        self.model_dir = Path(model_dir)
        self.beam_size = max(1, int(beam_size))
        self.hotwords = hotwords  # words the recognizer should expect (faster-whisper hotwords)
        try:
            self.model = WhisperModel(str(self.model_dir), device=device,
                                      compute_type=compute_type, cpu_threads=int(cpu_threads),
                                      local_files_only=True)
        except Exception as e:
            raise RuntimeError(f"Whisper model '{self.model_dir}' failed to load "
                               f"(device={device}, compute_type={compute_type}): {e}") from e
        self.english_only = not self.model.model.is_multilingual
        self.name = f"faster_whisper:{label or self.model_dir.name}"

    def transcribe(self, audio: np.ndarray, language: str | None = None,
                   prompt: str = "") -> TranscriptionResult:
        x = _check_audio(audio)
        t0 = time.monotonic()
        if self.english_only:
            language = "en"
        # One greedy pass, and no more text than speech can hold: on a short or noisy clip
        # Whisper may loop, and its temperature fallback decodes up to six times (seen: 6 s for
        # 0.4 s of audio, which stalled the partials behind it).
        seconds = x.size / 16000
        segments_iter, info = self.model.transcribe(
            x, language=language or None, beam_size=self.beam_size,
            initial_prompt=prompt or None, condition_on_previous_text=False,
            without_timestamps=True, vad_filter=False, hotwords=self.hotwords or None,
            temperature=0.0, max_new_tokens=min(440, int(12 + 8 * seconds)))
        segments = [Segment(float(s.start), float(s.end), s.text, float(s.avg_logprob),
                            len(s.tokens), float(s.no_speech_prob)) for s in segments_iter]
        return TranscriptionResult(
            text=clean_text("".join(s.text for s in segments)),
            confidence=confidence_from_segments(segments),
            language=info.language or (language or ""),
            segments=segments, duration=x.size / SAMPLE_RATE,
            inference_time=time.monotonic() - t0)


    def quick_transcribe(self, audio: np.ndarray, window_s: float = 4.0,
                         language: str | None = None) -> TranscriptionResult:
        """A rough transcript of a short clip (<= window_s) for the stop check: the encoder
        sees `window_s` of features instead of Whisper's fixed 30 s (tiny.en on 2 cores: ~100
        ms instead of ~450-600 ms). Good for single words; it tends to repeat them ("hold on.
        hold on. hold"), and it is not used for transcripts."""
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        x = _check_audio(audio)
        t0 = time.monotonic()
        frames = int(window_s * 100)
        feats = self.model.feature_extractor(x, padding=0)[:, :frames]
        window = np.zeros((feats.shape[0], frames), np.float32)
        window[:, :feats.shape[1]] = feats
        tokenizer = Tokenizer(self.model.hf_tokenizer, not self.english_only, task="transcribe",
                              language=None if self.english_only else (language or "en"))
        result = self.model.model.generate(
            ctranslate2.StorageView.from_array(window[None]),
            [list(tokenizer.sot_sequence) + [tokenizer.no_timestamps]],
            beam_size=1, max_length=24)
        tokens = [t for t in result[0].sequences_ids[0] if t < tokenizer.eot]
        return TranscriptionResult(text=clean_text(tokenizer.decode(tokens)), confidence=0.0,
                                   language=language or "en", duration=x.size / SAMPLE_RATE,
                                   inference_time=time.monotonic() - t0)


# ---------------------------------------------------------------------------- remote
# OpenAI's verbose_json reports the language by name ("english"); most servers send the code.
_LANGUAGE_NAMES = {
    "english": "en", "german": "de", "french": "fr", "spanish": "es", "italian": "it",
    "portuguese": "pt", "dutch": "nl", "polish": "pl", "russian": "ru", "ukrainian": "uk",
    "chinese": "zh", "japanese": "ja", "korean": "ko", "arabic": "ar", "turkish": "tr",
    "hindi": "hi", "swedish": "sv", "danish": "da", "norwegian": "no", "finnish": "fi",
    "czech": "cs", "greek": "el", "hebrew": "he", "vietnamese": "vi", "indonesian": "id",
}


def _language_code(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return ""
    v = value.strip().lower()
    if len(v) <= 3:
        return v
    return _LANGUAGE_NAMES.get(v, "")


def _client(client: OpenAIClient | ServerConfig | str) -> OpenAIClient:
    if isinstance(client, OpenAIClient):
        return client
    if isinstance(client, str):
        client = ServerConfig(base_url=client)
    return OpenAIClient(client)


class OpenAITranscriptionTranscriber(Transcriber):
    """POST a WAV as multipart/form-data to ``<base_url>/audio/transcriptions``."""

    def __init__(self, client: OpenAIClient | ServerConfig | str, *, model: str = "",
                 response_format: str = "verbose_json", temperature: float = 0.0) -> None:
        self.client = _client(client)
        self.model = model or self.client.config.model or "whisper-1"
        if response_format not in ("json", "verbose_json"):
            raise ValueError("response_format must be 'json' or 'verbose_json'")
        self.response_format = response_format
        self.temperature = temperature
        self.name = f"openai:{self.client.url}"

    def transcribe(self, audio: np.ndarray, language: str | None = None,
                   prompt: str = "") -> TranscriptionResult:
        x = _check_audio(audio)
        fields = {"model": self.model, "response_format": self.response_format,
                  "temperature": str(self.temperature)}
        if language:
            fields["language"] = language
        if prompt:
            fields["prompt"] = prompt
        t0 = time.monotonic()
        body = self.client.post_multipart(
            "/audio/transcriptions", fields,
            {"file": ("audio.wav", wav_bytes(x), "audio/wav")})
        elapsed = time.monotonic() - t0
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise BackendError(f"{self.client.url}/audio/transcriptions: no 'text' string in "
                               f"the response: {str(body)[:200]}")
        segments = []
        for s in body.get("segments") or []:
            if not isinstance(s, dict):
                continue
            try:
                segments.append(Segment(
                    float(s.get("start", 0.0)), float(s.get("end", 0.0)), str(s.get("text", "")),
                    float(s["avg_logprob"]) if s.get("avg_logprob") is not None else None,
                    len(s.get("tokens") or []),
                    float(s["no_speech_prob"]) if s.get("no_speech_prob") is not None else None))
            except (TypeError, ValueError) as e:
                raise BackendError(f"{self.client.url}/audio/transcriptions: malformed segment "
                                   f"{str(s)[:200]}") from e
        return TranscriptionResult(
            text=clean_text(body["text"]), confidence=confidence_from_segments(segments),
            language=_language_code(body.get("language")) or (language or ""),
            segments=segments, duration=x.size / SAMPLE_RATE, inference_time=elapsed)


DEFAULT_CHAT_INSTRUCTION = ("Transcribe the speech in this audio exactly, word for word. "
                            "Reply with the transcript only, no quotes or comments.")


class ChatAudioTranscriber(Transcriber):
    """An audio-language model via ``/chat/completions`` with an ``input_audio`` part."""

    def __init__(self, client: OpenAIClient | ServerConfig | str, *, model: str = "",
                 instruction: str = DEFAULT_CHAT_INSTRUCTION, max_tokens: int = 256) -> None:
        self.client = _client(client)
        self.model = model
        self.instruction = instruction or DEFAULT_CHAT_INSTRUCTION
        self.max_tokens = int(max_tokens)
        self.name = f"chat_audio:{self.client.url}"

    def request_messages(self, audio: np.ndarray, language: str | None = None,
                         prompt: str = "") -> list[dict[str, Any]]:
        text = self.instruction
        if language:
            text += f" The language is '{language}'."
        if prompt:
            text += f" Context: {prompt}"
        data = base64.b64encode(wav_bytes(_check_audio(audio))).decode("ascii")
        return [{"role": "user", "content": [
            {"type": "text", "text": text},
            {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
        ]}]

    def transcribe(self, audio: np.ndarray, language: str | None = None,
                   prompt: str = "") -> TranscriptionResult:
        x = _check_audio(audio)
        messages = self.request_messages(x, language, prompt)
        params: dict[str, Any] = {"temperature": 0.0, "max_tokens": self.max_tokens}
        if self.model:
            params["model"] = self.model
        t0 = time.monotonic()
        response = self.client.chat(messages, **params)
        text = chat_content(response).strip()
        # Models like to wrap the answer; take the words, not the wrapping.
        for prefix in ("transcript:", "transcription:"):
            if text.lower().startswith(prefix):
                text = text[len(prefix):].strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
            text = text[1:-1]
        return TranscriptionResult(text=clean_text(text), confidence=0.0,
                                   language=language or "", duration=x.size / SAMPLE_RATE,
                                   inference_time=time.monotonic() - t0)
