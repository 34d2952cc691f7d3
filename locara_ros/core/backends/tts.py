"""Speech synthesis backends (no rclpy).

A :class:`Synthesizer` turns one sentence into audio, yielded chunk by chunk so the caller can
stop between chunks. :class:`PiperSynthesizer` runs a Piper voice in-process through the ``piper``
Python API: text never goes through a shell or a subprocess.
"""
from __future__ import annotations

import abc
import logging
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from locara_ros.core.models import ModelNotFoundError, resolve_piper_voice

log = logging.getLogger(__name__)


class SynthesisError(RuntimeError):
    """A sentence could not be synthesized (the message says why)."""


class Synthesizer(abc.ABC):
    """Text -> mono float32 audio in [-1, 1] at :attr:`sample_rate`."""

    name: str = "synthesizer"
    sample_rate: int = 22050

    @abc.abstractmethod
    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Yield audio chunks for `text` (one or more); nothing for text with nothing to say."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model."""


class _ShrinkingSession:
    """An onnxruntime session whose memory arena gives back what a sentence needed.

    onnxruntime's CPU arena keeps the high-water mark of every run, and Piper's activations
    grow with the length of the sentence: each longer sentence grew the tts node for good (a
    10-minute soak: +157 MB; 150 random sentences of up to 30 words in one process: 141 ->
    456 MB). With arena shrinkage after every run: 188-242 MB over 250 such sentences, at about
    the same speed (150 sentences: 38 s, 36 s without). Turning the arena off instead left
    glibc's heap fragmented (440 MB)."""

    def __init__(self, session) -> None:
        import onnxruntime
        self._session = session
        self._options = onnxruntime.RunOptions()
        self._options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, output_names, input_feed, run_options=None):
        return self._session.run(output_names, input_feed, run_options or self._options)

    def __getattr__(self, name):
        return getattr(self._session, name)


def _cpu_session(onnx: Path, threads: int):
    """An onnxruntime CPU session with `threads` intra-op threads that sleep when idle (the
    default is one per core, spinning after each run: on a 2-core robot that spinning is CPU
    taken from the recognizer and the parser)."""
    import onnxruntime
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(onnx), sess_options=opts,
                                        providers=["CPUExecutionProvider"])


class PiperSynthesizer(Synthesizer):
    """A Piper voice (.onnx + .onnx.json); the packaged en_US-joe-medium by default."""

    def __init__(self, voice_path: str = "", *, speaker_id: int | None = None,
                 length_scale: float | None = None, noise_scale: float | None = None,
                 noise_w_scale: float | None = None, normalize_audio: bool = True,
                 use_cuda: bool = False, threads: int = 0) -> None:
        onnx, config = resolve_piper_voice(voice_path)
        try:
            from piper import PiperVoice, SynthesisConfig
        except ImportError as e:  # pragma: no cover - piper-tts is in requirements.txt
            raise ModelNotFoundError(
                f"Piper voice '{onnx}': the piper-tts package is not installed ({e}); "
                "pip install piper-tts") from e
        try:
            if threads > 0 and not use_cuda:  # one session, built with our options
                import json

                from piper.config import PiperConfig
                from piper.voice import ESPEAK_DATA_DIR
                self._voice = PiperVoice(
                    config=PiperConfig.from_dict(json.loads(Path(config).read_text("utf-8"))),
                    session=_cpu_session(onnx, threads), espeak_data_dir=Path(ESPEAK_DATA_DIR),
                    download_dir=Path.cwd())
            else:
                self._voice = PiperVoice.load(str(onnx), config_path=str(config),
                                              use_cuda=use_cuda)
        except Exception as e:
            raise ModelNotFoundError(f"Piper voice '{onnx}' failed to load: {e}") from e
        self._voice.session = _ShrinkingSession(self._voice.session)
        n_speakers = int(getattr(self._voice.config, "num_speakers", 1) or 1)
        if speaker_id is not None and not 0 <= speaker_id < n_speakers:
            raise ModelNotFoundError(
                f"Piper voice '{onnx}' has {n_speakers} speaker(s); speaker_id {speaker_id} "
                "is out of range")
        self._config = SynthesisConfig(speaker_id=speaker_id, length_scale=length_scale,
                                       noise_scale=noise_scale, noise_w_scale=noise_w_scale,
                                       normalize_audio=normalize_audio)
        self.sample_rate = int(self._voice.config.sample_rate)
        self.name = f"piper:{Path(onnx).stem}"
        self.path = Path(onnx)
        self._lock = threading.Lock()  # one onnxruntime session, one sentence at a time

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        text = text.strip()
        if not text:
            return
        with self._lock:
            try:
                for chunk in self._voice.synthesize(text, self._config):
                    audio = np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1)
                    if audio.size:
                        yield audio
            except Exception as e:
                raise SynthesisError(f"{self.name} failed on {text[:60]!r}: {e}") from e
