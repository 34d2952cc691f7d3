"""The asr node's parameters (README: asr, Parameters)."""
from __future__ import annotations

from dataclasses import dataclass

from locara_ros.core import contract as C
from locara_ros.core.settings import Settings, setting


@dataclass(frozen=True)
class AsrSettings(Settings):
    backend: str = setting(
        "faster_whisper",
        "faster_whisper (local), openai (/audio/transcriptions) or chat_audio "
        "(/chat/completions with input_audio)",
        choices=("faster_whisper", "openai", "chat_audio"))
    model: str = setting("tiny.en", "faster_whisper: 'tiny.en', 'base' or a CTranslate2 model dir")
    compute_type: str = setting("int8", "faster_whisper: CTranslate2 compute type")
    compute_device: str = setting("cpu", "faster_whisper: cpu, cuda or auto")
    beam_size: int = setting(1, "faster_whisper: beam size (1 = greedy, fastest)", limits=(1, 16))
    threads: int = setting(0, "faster_whisper: CPU threads (0 = library default)", limits=(0, 256))
    language: str = setting("auto", "ISO 639-1 code, or 'auto' to detect (.en models: always en)")
    initial_prompt: str = setting("", "text that primes the recognizer (names, jargon)")
    prime_with_schema: str = setting(
        "hotwords",
        "give the recognizer the command schema's words (places, objects, action and stop "
        "words): hotwords, prompt (initial_prompt) or off",
        choices=("hotwords", "prompt", "off"))
    schema_path: str = setting(
        "",
        "command schema YAML (priming, end of turn from the words); empty = the installed "
        "share/locara_ros/config/commands.yaml")
    server_url: str = setting("", "openai/chat_audio: base URL, e.g. http://gpu:8000/v1")
    api_key: str = setting("", "openai/chat_audio: bearer token (empty: none)")
    server_model: str = setting("", "openai/chat_audio: model name sent to the server")
    server_timeout: float = setting(
        30.0,
        "openai/chat_audio: seconds per request",
        limits=(0.1, 3600.0))
    fallback: str = setting(
        "",
        "openai/chat_audio: local backend used while the server is unreachable "
        "('faster_whisper' with `model`; empty = none)",
        choices=("", "faster_whisper"))
    retry_interval: float = setting(
        5.0,
        "seconds between probes of an unreachable server",
        limits=(0.1, 3600.0))
    chat_instruction: str = setting(
        "",
        "chat_audio: instruction sent with the audio (empty: ask for a verbatim transcript)")
    partial_min_speech_s: float = setting(
        0.8,
        "no partial before this much speech: a short utterance (a stop word) goes straight to"
        " the final, which a running partial would delay",
        limits=(0.0, 30.0))
    stop_check_max_s: float = setting(
        2.0,
        "utterances of at most this many seconds get a quick stop check at each silence (a "
        "short-window decode, ~100 ms on a CPU): a stop phrase goes out as a partial before "
        "the full decode; 0 = off",
        limits=(0.0, 10.0))
    partial_interval: float = setting(
        0.5,
        "seconds from the end of one partial hypothesis to the next (0 = no partials)",
        limits=(0.0, 10.0))
    chunk_seconds: float = setting(
        25.0,
        "utterances longer than this are transcribed in overlapping chunks of this length",
        limits=(2.0, 30.0))
    chunk_overlap: float = setting(2.0, "seconds shared by consecutive chunks", limits=(0.0, 10.0))
    speech_pad_ms: float = setting(
        200.0,
        "silence appended after the last speech window for recognition",
        limits=(0.0, 2000.0))
    vad_model: str = setting("", "Silero VAD v6 ONNX path (empty: the one inside faster-whisper)")
    vad_threshold: float = setting(
        0.5,
        "speech probability that starts or resumes speech",
        limits=(0.01, 0.99))
    vad_neg_threshold: float = setting(
        0.0,
        "probability below which a window is silence (0 = threshold - 0.15)",
        limits=(0.0, 0.99))
    vad_start_ms: float = setting(96.0, "speech needed before SPEECH_STARTED", limits=(0.0, 2000.0))
    vad_stop_ms: float = setting(
        400.0,
        "silence that ends an utterance (words not judged, or neither complete nor trailing "
        "off)",
        limits=(32.0, 10000.0))
    turn_end_complete_ms: float = setting(
        200.0,
        "silence that ends an utterance whose words so far are a complete request (a sentence"
        " template matches, or a stop phrase)",
        limits=(32.0, 10000.0))
    turn_end_incomplete_ms: float = setting(
        800.0,
        "silence that ends an utterance whose words trail off mid-phrase ('go to the ...')",
        limits=(32.0, 10000.0))
    vad_min_speech_ms: float = setting(
        200.0,
        "shorter utterances are discarded (empty final)",
        limits=(0.0, 10000.0))
    vad_pre_roll_ms: float = setting(
        300.0,
        "audio kept before the speech start",
        limits=(0.0, 5000.0))
    max_utterance_s: float = setting(
        60.0,
        "an utterance is ended after this many seconds",
        limits=(1.0, 3600.0))
    stream_timeout: float = setting(
        1.0,
        "end an utterance when no audio arrives for this long [s]",
        limits=(0.05, 60.0))
    input_sample_rate: int = setting(
        16000,
        "S16LE mono rate assumed until audio/mic/info arrives",
        limits=(8000, 384000))
    audio_data_topic: str = setting(C.AUDIO_MIC_RAW.name, "topic for unstamped AudioData")
    queue_size: int = setting(
        500,
        "audio chunks buffered between callbacks and the VAD thread",
        limits=(1, 100000))
    echo_mode: str = setting(
        "off",
        "off or reference: cancel the robot's own voice using audio/tts (see "
        "locara_ros.core.echo)",
        choices=("off", "reference", "half_duplex"))
    frame_id: str = setting("", "frame_id for transcripts when the audio carries none")

    def check(self) -> None:
        if self.echo_mode == "half_duplex":
            raise ValueError("echo_mode 'half_duplex' was removed: use 'reference' (it gates the "
                             "mic the same way until it has learned the echo path)")

    @property
    def language_code(self) -> str | None:
        """The language to force, or None to detect ('auto' or empty)."""
        lang = self.language.strip().lower()
        return None if lang in ("", "auto") else lang
