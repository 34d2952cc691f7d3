"""The tts node's parameters (README: tts, Parameters)."""
from __future__ import annotations

from dataclasses import dataclass

from locara_ros.core.settings import Settings, setting


@dataclass(frozen=True)
class TtsSettings(Settings):
    voice: str = setting(
        "",
        "Piper voice .onnx path (its .onnx.json beside it); empty = packaged en_US-joe-medium")
    speaker_id: int = setting(
        -1,
        "speaker of a multi-speaker voice; -1 = the voice's default",
        limits=(-1, 10000))
    length_scale: float = setting(
        0.0,
        "speaking rate: >1 slower, <1 faster; 0 = the voice's default",
        limits=(0.0, 10.0))
    threads: int = setting(
        0,
        "onnxruntime threads for the Piper voice, which then do not spin while idle; 0 = "
        "onnxruntime's default (one per core, spinning)",
        limits=(0, 256))
    publish_audio: bool = setting(
        True,
        "publish synthesized audio on audio/tts (+ audio/tts/info); needed for "
        "echo_mode=reference in the asr node")
    output_rate: int = setting(
        0,
        "sample rate of audio/tts in Hz; 0 = the voice's rate",
        limits=(0, 384000))
    frame_id: str = setting("", "header.frame_id of audio/tts (the loudspeaker frame)")
    play_on_device: bool = setting(True, "play on a local audio device through PortAudio")
    device: str = setting("", "PortAudio output device index or name part; empty = default")
    device_rate: int = setting(
        0,
        "device sample rate in Hz; 0 = the device's default rate",
        limits=(0, 384000))
    chunk_ms: float = setting(
        20.0,
        "audio chunk length in ms (playback granularity, stop bound)",
        limits=(5.0, 200.0))
    lead_ms: float = setting(
        40.0,
        "how far ahead of its play time a chunk is released, ms",
        limits=(0.0, 1000.0))
    speaker_enabled: bool = setting(True, "false mutes the robot: text is dropped and logged",
                                    dynamic=True)
    volume: float = setting(1.0, "output gain (capped at max_volume)", limits=(0.0, 10.0),
                            dynamic=True)
    max_volume: float = setting(
        1.0,
        "hard cap on gain and sample amplitude (0..1]",
        limits=(0.001, 1.0))
    max_speech_seconds: float = setting(
        120.0,
        "at most this much speech per speech_window_seconds; beyond it sentences are dropped "
        "with an ERROR event",
        limits=(0.0, 1000000.0))
    speech_window_seconds: float = setting(
        60.0,
        "window of the speech-time budget, s",
        limits=(1.0, 1000000.0))
    barge_in: bool = setting(True, "stop speaking when the user talks (SPEECH_STARTED)",
                             dynamic=True)
    barge_in_min_speech: float = setting(
        0.2,
        "user speech must last this long (s, from its onset) before it interrupts; shorter "
        "sounds (a cough) do not",
        limits=(0.0, 10.0), dynamic=True)
    max_sentence_chars: int = setting(
        250,
        "a sentence longer than this is cut at a clause break",
        limits=(20, 100000))
    max_text_chars: int = setting(
        5000,
        "longest accepted voice/say text or reply",
        limits=(1, 1000000))
    reply_timeout: float = setting(
        15.0,
        "a streamed reply with no chunk for this long is closed",
        limits=(0.1, 3600.0))

    def check(self) -> None:
        if not (self.publish_audio or self.play_on_device):
            raise ValueError("no output: both publish_audio and play_on_device are false")

    @classmethod
    def dynamic(cls) -> dict[str, object]:
        """The run-time parameters: name -> bool, or the (low, high) range of a number."""
        return {s.name: (s.limits if s.limits is not None else bool)
                for s in cls.specs() if s.dynamic}
