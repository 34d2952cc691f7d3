"""The streaming recognizer in core (locara_ros.core.recognizer), in-process: the real Silero VAD
and faster-whisper tiny.en on Piper speech fed in 20 ms chunks; the recognizer thread's jobs are
run one by one (`step`) after each chunk, so each run is the same."""
from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np
import pytest
from locara_ros.testing.speech import conversation, silence, synthesize

from locara_ros.core.backends.asr import FasterWhisperTranscriber, Transcriber
from locara_ros.core.backends.openai_http import BackendError
from locara_ros.core.command_schema import load_schema
from locara_ros.core.models import resolve_whisper
from locara_ros.core.recognizer import (
    Failed,
    Hypothesis,
    RecognizerConfig,
    Started,
    Stopped,
    StreamingRecognizer,
)
from locara_ros.core.transcripts import normalize_text
from locara_ros.core.turns import TurnEnd
from locara_ros.core.vad import Segmenter, SileroVad, VadConfig

SCHEMA = Path(__file__).resolve().parent.parent / "config" / "commands.yaml"
CHUNK = 320  # 20 ms at 16 kHz


@pytest.fixture(scope="module")
def whisper():
    model = FasterWhisperTranscriber(resolve_whisper("tiny.en"))
    yield model
    model.close()


def run(audio: np.ndarray, transcriber: Transcriber, vad: VadConfig | None = None,
        config: RecognizerConfig | None = None, turn_end: TurnEnd | None = None,
        stop_check=None) -> list:
    events: list = []
    rec = StreamingRecognizer(Segmenter(SileroVad(), vad or VadConfig()), transcriber,
                              config or RecognizerConfig(language="en"), events.append,
                              turn_end=turn_end, id_prefix="t", stop_check=stop_check)
    for i in range(0, audio.size, CHUNK):
        rec.feed(audio[i:i + CHUNK], 1_000_000_000 + i * 62_500, "mic_link")
        while rec.step():
            pass
    rec.flush("end of test")
    while rec.step():
        pass
    return events


def similar(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, normalize_text(a), normalize_text(b)).ratio()


def test_utterances_give_start_partials_stop_and_one_final_each(whisper):
    said = ["Go to the kitchen.",
            "Take a picture of the table, and then come back here and tell me what you saw."]
    events = run(conversation(said, gap=1.5), whisper,
                 turn_end=TurnEnd(load_schema(SCHEMA), 200.0, 400.0, 800.0))
    ids = list(dict.fromkeys(e.utterance.id for e in events))
    assert ids == ["t-0001", "t-0002"]
    for uid, text in zip(ids, said, strict=True):
        mine = [e for e in events if e.utterance.id == uid]
        kinds = [type(e).__name__ + ("/final" if getattr(e, "final", False) else "")
                 for e in mine]
        assert kinds[0] == "Started" and kinds[-2:] == ["Stopped", "Hypothesis/final"], kinds
        assert kinds.count("Hypothesis/final") == 1 and "Failed" not in kinds, kinds
        final = mine[-1]
        assert similar(final.result.text, text) > 0.85, final.result.text
        assert final.utterance.frame_id == "mic_link"
        # the speculative final, computed from the first silence, is the final: no recognizer
        # work after the turn ended
        assert final.spent == 0.0, final.spent
    first_stop = next(e.stop for e in events if isinstance(e, Stopped))
    assert "complete request" in first_stop.turn, first_stop.turn
    partials = [e for e in events if isinstance(e, Hypothesis) and not e.final
                and e.utterance.id == "t-0002"]
    assert partials and all(p.result.text for p in partials)


def test_a_discarded_utterance_gets_an_empty_final_without_recognition(whisper):
    events = run(np.concatenate([silence(0.3), synthesize("Go to the kitchen."), silence(1.0)]),
                 whisper, vad=VadConfig(min_speech_ms=5000))
    stop = next(e for e in events if isinstance(e, Stopped))
    assert stop.stop.discarded
    [final] = [e for e in events if isinstance(e, Hypothesis) and e.final]
    assert (final.result.text, final.spent) == ("", 0.0)


class FailingTranscriber(Transcriber):
    """Stand-in for a recognizer server that is down (the real one cannot be made to fail on
    demand): every call raises BackendError."""

    name = "failing-stand-in"
    calls = 0

    def transcribe(self, audio, language=None, prompt=""):
        self.calls += 1
        raise BackendError("connection refused (stand-in)")


def test_a_failed_recognition_is_reported_and_still_gives_an_empty_final():
    """...and a failing backend is not called again and again for the same silence (it was:
    a busy loop of speculative finals against a server that was down)."""
    failing = FailingTranscriber()
    events = run(np.concatenate([silence(0.3), synthesize("Go to the kitchen."), silence(1.0)]),
                 failing)
    assert failing.calls <= 4, failing.calls
    failed = [e for e in events if isinstance(e, Failed)]
    assert failed and failed[-1].final and "connection refused" in failed[-1].error
    [final] = [e for e in events if isinstance(e, Hypothesis) and e.final]
    assert final.result.text == ""
    assert isinstance(events[0], Started)


def test_bad_chunking_is_refused():
    with pytest.raises(ValueError, match="chunk_overlap"):
        RecognizerConfig(chunk_seconds=4.0, chunk_overlap=2.0)


@pytest.mark.parametrize("text", ["hold on. hold on. hold on. hold", "Stop.", "go to the kitchen"])
def test_first_repeat(text):
    from locara_ros.core.recognizer import first_repeat
    assert first_repeat(text) == {"Stop.": "stop", "go to the kitchen": "go to the kitchen"}.get(
        text, "hold on")


def test_the_stop_check_gives_a_stop_partial_before_the_utterance_ends(whisper):
    """A short utterance that is a stop phrase: the quick short-window decode publishes it as a
    partial at the first silence, before the VAD ends the utterance; an ordinary short request
    gets no such partial."""
    from locara_ros.core.recognizer import stop_checker
    audio = conversation(["Freeze.", "Go home.", "Hold on."], gap=1.5)
    events = run(audio, whisper, config=RecognizerConfig(language="en", stop_check_max_s=2.0,
                                                         partial_interval=0.0),
                 stop_check=stop_checker(load_schema(SCHEMA)))
    by_id: dict[str, list] = {}
    for e in events:
        by_id.setdefault(e.utterance.id, []).append(e)
    freeze, home, hold_on = by_id.values()
    for mine, said in ((freeze, "freeze"), (hold_on, "hold on")):
        first = next(i for i, e in enumerate(mine) if isinstance(e, Hypothesis))
        ended = next(i for i, e in enumerate(mine) if isinstance(e, Stopped))
        assert first < ended and not mine[first].final, mine
        assert mine[first].result.text == said, mine[first].result.text
    assert [e for e in home if isinstance(e, Hypothesis) and not e.final] == []


class Counted(Transcriber):
    """The real tiny.en, with a record of which decode ran when (full or quick)."""

    def __init__(self, real: FasterWhisperTranscriber, log: list) -> None:
        self.real, self.log, self.name = real, log, real.name

    def transcribe(self, audio, language=None, prompt=""):
        self.log.append("full")
        return self.real.transcribe(audio, language, prompt)

    def quick_transcribe(self, audio, window_s=4.0, language=None):
        self.log.append("quick")
        return self.real.quick_transcribe(audio, window_s, language=language)


def test_a_short_utterance_gets_quick_partials_and_no_full_decode_before_its_silence(whisper):
    """While an utterance is short enough for the stop check its partials are the quick
    decode's (a full one running when the speech ends would hold the check back ~500 ms); a
    stop phrase among them goes out as the phrase. A long utterance gets full partials."""
    from locara_ros.core.recognizer import stop_checker
    log: list = []
    events: list = []
    rec = StreamingRecognizer(
        Segmenter(SileroVad(), VadConfig()), Counted(whisper, log),
        RecognizerConfig(language="en", stop_check_max_s=2.0, partial_interval=0.2,
                         partial_min_speech_s=0.3),
        lambda e: events.append((e, len(log))), id_prefix="t",
        stop_check=stop_checker(load_schema(SCHEMA)))
    audio = conversation(["Emergency stop.",
                          "Take a picture of the table, and then come back here."], gap=1.5)
    for i in range(0, audio.size, CHUNK):
        rec.feed(audio[i:i + CHUNK], 1_000_000_000 + i * 62_500, "mic_link")
        while rec.step():
            pass
    short = [(e, n) for e, n in events if e.utterance.id == "t-0001"]
    partials = [(e, n) for e, n in short if isinstance(e, Hypothesis) and not e.final]
    assert partials, short
    first_stop = next(e for e, _ in partials if e.result.text == "emergency stop")
    # no full decode of the first utterance before its first silence: every decode up to the
    # first stop partial was a quick one
    upto = next(n for e, n in partials if e is first_stop)
    assert log[:upto] and set(log[:upto]) == {"quick"}, log[:upto]
    long_partials = [e for e, _ in events if e.utterance.id == "t-0002"
                     and isinstance(e, Hypothesis) and not e.final]
    assert len(long_partials) >= 2 and "full" in log[upto:]


def test_a_turn_that_ends_before_the_stop_check_ran_is_checked_before_its_full_decode(whisper):
    """On a busy machine the VAD can end the utterance while the recognizer is still on an
    earlier job; the final then runs the quick check first, so the stop does not wait for the
    full decode (under parser load that took 1.4-1.9 s)."""
    from locara_ros.core.recognizer import stop_checker
    events: list = []
    rec = StreamingRecognizer(Segmenter(SileroVad(), VadConfig()), whisper,
                              RecognizerConfig(language="en", stop_check_max_s=2.0),
                              events.append, id_prefix="t",
                              stop_check=stop_checker(load_schema(SCHEMA)))
    audio = conversation(["Freeze."], gap=1.5, tail=1.5)
    for i in range(0, audio.size, CHUNK):  # the recognizer thread is busy: no step
        rec.feed(audio[i:i + CHUNK], 1_000_000_000 + i * 62_500, "mic_link")
    assert any(isinstance(e, Stopped) for e in events)
    while rec.step():
        pass
    hyps = [e for e in events if isinstance(e, Hypothesis)]
    assert [(h.final, h.result.text) for h in hyps[:1]] == [(False, "freeze")], hyps
    assert hyps[-1].final and normalize_text(hyps[-1].result.text) == "freeze"
