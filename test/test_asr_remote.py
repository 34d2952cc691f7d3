"""Remote ASR backends.

* /audio/transcriptions: against a REAL OpenAI-compatible server, faster-whisper-server from
  PyPI, serving the packaged tiny.en directory on 127.0.0.1 (never downloads: HF_HUB_OFFLINE=1
  and a local model path).
* /chat/completions with input_audio: no audio-language model server runs here, so the test uses
  a CONTRACT-CHECKING STAND-IN: a small HTTP server that validates the request against the
  OpenAI chat schema for input_audio (base64 WAV, format "wav") and answers by running the real
  faster-whisper on the audio it received. It is not an audio-language model.
"""
from __future__ import annotations

import array
import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf
from audio_common_msgs.msg import AudioDataStamped, AudioInfo
from support import servers
from support.servers import free_port
from locara_ros.testing.speech import silence, synthesize

from locara_ros.core import contract as C
from locara_ros.core.audio import encode_s16le, resample
from locara_ros.core.backends.asr import (
    ChatAudioTranscriber,
    FasterWhisperTranscriber,
    OpenAITranscriptionTranscriber,
)
from locara_ros.core.backends.openai_http import BackendError, BackendUnavailable
from locara_ros.core.models import resolve_whisper
from locara_ros.core.transcripts import normalize_text
from locara_ros.msg import Transcript, VoiceEvent
from locara_ros.nodes.common import AUDIO_QOS, EVENTS_QOS, LATCHED_QOS, RELIABLE_QOS
from locara_ros.testing.processes import NodeProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def whisper_server(tmp_path_factory):
    """faster-whisper-server 0.0.3 (PyPI) on a free loopback port, serving tiny.en from disk."""
    proc, url = servers.whisper_server(str(tmp_path_factory.mktemp("fws_logs")))
    yield url
    proc.stop()
    if "download" in proc.output().lower():
        pytest.fail(f"faster-whisper-server tried to download:\n{proc.output()}")


class ChatAudioStandIn:
    """CONTRACT-CHECKING STAND-IN for an audio-language model server (Qwen2-Audio / Ultravox on
    vLLM). Validates each /v1/chat/completions request; a valid one is answered with the text the
    real faster-whisper hears in the submitted audio. mode="garbage" answers 200 with non-JSON."""

    def __init__(self) -> None:
        self.asr = FasterWhisperTranscriber(resolve_whisper("tiny.en"))
        self.requests: list[dict] = []
        self.violations: list[str] = []
        self.mode = "ok"
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if standin.mode == "garbage":
                    self._send(200, b"<html>upstream exploded</html>", "text/html")
                    return
                try:
                    text = standin.check_and_answer(self.path, self.headers, body)
                except ValueError as e:
                    standin.violations.append(str(e))
                    self._send(400, json.dumps({"error": {"message": str(e),
                                                          "type": "invalid_request_error"}}))
                    return
                self._send(200, json.dumps({
                    "id": "chatcmpl-standin", "object": "chat.completion",
                    "created": int(time.time()), "model": "stand-in",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}]}))

            def _send(self, code: int, payload, ctype: str = "application/json") -> None:
                data = payload if isinstance(payload, bytes) else payload.encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=False)
        self.thread.start()

    def check_and_answer(self, path: str, headers, body: bytes) -> str:
        if path != "/v1/chat/completions":
            raise ValueError(f"unexpected path {path}")
        if not headers.get("Content-Type", "").startswith("application/json"):
            raise ValueError("Content-Type is not application/json")
        req = json.loads(body)
        self.requests.append(req)
        if not isinstance(req.get("model"), str) or not req["model"]:
            raise ValueError("'model' must be a non-empty string")
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        user = messages[-1]
        if user.get("role") != "user" or not isinstance(user.get("content"), list):
            raise ValueError("last message must be a user message with a content list")
        parts = {p.get("type"): p for p in user["content"] if isinstance(p, dict)}
        if set(parts) - {"text", "input_audio"} or "input_audio" not in parts:
            raise ValueError(f"content part types {sorted(parts)}: need input_audio (+ text)")
        audio_part = parts["input_audio"].get("input_audio")
        if not isinstance(audio_part, dict) or set(audio_part) != {"data", "format"}:
            raise ValueError("input_audio must be {data, format}")
        if audio_part["format"] != "wav":
            raise ValueError(f"format {audio_part['format']!r} is not 'wav'")
        raw = base64.b64decode(audio_part["data"], validate=True)
        if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
            raise ValueError("input_audio.data is not a base64 WAV file")
        audio, rate = sf.read(io.BytesIO(raw), dtype="float32")
        if audio.ndim != 1:
            raise ValueError("expected mono audio")
        return self.asr.transcribe(resample(audio, rate, 16000)).text

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def standin():
    s = ChatAudioStandIn()
    yield s
    s.close()


@pytest.fixture(scope="module")
def utterance():
    text = "go back to the charging station"
    return text, np.concatenate([silence(0.6), synthesize(text), silence(1.0)])


def publish_utterance(ros, name: str, audio: np.ndarray) -> None:
    node = ros.node(name)
    info = node.create_publisher(AudioInfo, C.AUDIO_MIC_INFO.name, LATCHED_QOS)
    pub = node.create_publisher(AudioDataStamped, C.AUDIO_MIC.name, AUDIO_QOS)
    info.publish(AudioInfo(channels=1, sample_rate=16000, sample_format="S16LE",
                           bitrate=256000, coding_format="wave"))
    ros.wait_for_subscribers(pub, timeout=20)
    time.sleep(0.3)
    t0 = time.monotonic()
    for k, i in enumerate(range(0, audio.size, 320)):
        msg = AudioDataStamped()
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.audio.data = array.array("B", encode_s16le(audio[i:i + 320]))
        pub.publish(msg)
        time.sleep(max(0.0, t0 + (k + 1) * 0.02 - time.monotonic()))


# ---------------------------------------------------------------------------- /audio/transcriptions
def test_openai_transcriptions_against_faster_whisper_server(whisper_server, utterance):
    text, audio = utterance
    asr = OpenAITranscriptionTranscriber(whisper_server)
    result = asr.transcribe(audio, language="en")
    assert normalize_text(result.text) == normalize_text(text)
    assert result.language == "en" and 0.0 < result.confidence <= 1.0
    assert result.segments and asr.name == f"openai:{whisper_server}"
    # Plain "json" responses carry text only.
    plain = OpenAITranscriptionTranscriber(whisper_server, response_format="json")
    assert normalize_text(plain.transcribe(audio).text) == normalize_text(text)


def test_asr_node_with_openai_backend(ros, procs, whisper_server, utterance):
    text, audio = utterance
    asr = procs.start(NodeProcess.node("asr", log_dir=procs.log_dir, params={
        "backend": "openai", "server_url": whisper_server, "language": "en",
        "partial_interval": 0.0}), ready_timeout=60)
    listen = ros.node("remote_listener")
    finals = ros.collect(listen, Transcript, C.TRANSCRIPT.name, RELIABLE_QOS)
    ros.wait_for_publishers(listen, C.TRANSCRIPT.name)
    publish_utterance(ros, "remote_feeder", audio)
    [final] = finals.wait_for(1, timeout=60)
    assert normalize_text(final.text) == normalize_text(text)
    assert final.backend == f"openai:{whisper_server}" and final.language == "en"
    assert asr.alive


# ---------------------------------------------------------------------------- chat + input_audio
def test_chat_audio_against_contract_checking_standin(standin, utterance):
    text, audio = utterance
    asr = ChatAudioTranscriber(standin.url, model="qwen2-audio")
    result = asr.transcribe(audio, language="en")
    assert normalize_text(result.text) == normalize_text(text)
    assert not standin.violations
    req = standin.requests[-1]
    assert req["model"] == "qwen2-audio" and req["temperature"] == 0.0
    parts = req["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "input_audio"]

    standin.mode = "garbage"
    try:
        with pytest.raises(BackendError, match="not JSON"):
            asr.transcribe(audio)
    finally:
        standin.mode = "ok"
    with pytest.raises(BackendUnavailable):
        ChatAudioTranscriber(f"http://127.0.0.1:{free_port()}/v1").transcribe(audio)


def test_asr_node_keeps_running_when_the_server_is_down_or_answers_garbage(
        ros, procs, standin, utterance):
    text, audio = utterance
    asr = procs.start(NodeProcess.node("asr", log_dir=procs.log_dir, params={
        "backend": "chat_audio", "server_url": standin.url, "server_model": "ultravox",
        "partial_interval": 0.0, "server_timeout": 10.0}), ready_timeout=60)
    listen = ros.node("down_listener")
    finals = ros.collect(listen, Transcript, C.TRANSCRIPT.name, RELIABLE_QOS)
    events = ros.collect(listen, VoiceEvent, C.VOICE_EVENTS.name, EVENTS_QOS)
    ros.wait_for_publishers(listen, C.TRANSCRIPT.name)

    standin.mode = "garbage"
    try:
        publish_utterance(ros, "down_feeder", audio)
        [bad] = finals.wait_for(1, timeout=60)
    finally:
        standin.mode = "ok"
    assert bad.text == "" and bad.is_final
    [err] = events.wait_for(1, timeout=10, where=lambda e: e.type == VoiceEvent.ERROR)
    assert err.utterance_id == bad.utterance_id and "not JSON" in err.detail
    asr.wait_for_output("transcription of .* failed", timeout=5)

    # The next utterance works again: the node did not stop.
    publish_utterance(ros, "down_feeder2", audio)
    good = finals.wait_for(2, timeout=60)[-1]
    assert normalize_text(good.text) == normalize_text(text)
    assert good.backend == f"chat_audio:{standin.url}" and asr.alive
