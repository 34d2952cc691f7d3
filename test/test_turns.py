"""End of turn from the words and the silence (core, no ROS): the judge, and the VAD honouring
it with real Piper speech and the real Silero model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from locara_ros.testing.speech import silence, synthesize

from locara_ros.core.command_schema import load_schema
from locara_ros.core.turns import TurnEnd
from locara_ros.core.vad import Segmenter, SileroVad, SpeechStop, VadConfig

SCHEMA = Path(__file__).resolve().parent.parent / "config" / "commands.yaml"


@pytest.fixture(scope="module")
def judge():
    return TurnEnd(load_schema(SCHEMA), complete_ms=200, default_ms=400, incomplete_ms=800)


@pytest.mark.parametrize("text,ms,why", [
    ("Go to the kitchen.", 200, "a complete request (go_to)"),
    ("turn left ninety degrees", 200, "a complete request (turn)"),
    ("Stop!", 200, "a stop phrase"),
    ("go to the", 800, "words that trail off"),
    ("turn left and", 800, "words that trail off"),
    ("pick up the um", 800, "words that trail off"),
    ("I was wondering whether", 400, ""),
    ("", 400, ""),
])
def test_the_words_so_far_set_the_silence_that_ends_the_turn(judge, text, ms, why):
    decision = judge.judge(text)
    assert (decision.stop_ms, decision.why) == (ms, why)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="complete_ms"):
        TurnEnd(None, complete_ms=-5)
    assert TurnEnd(None).judge("go to the kitchen").stop_ms == 400  # no schema: no templates


def _stop_after(speech: np.ndarray, turn_ms: float | None) -> tuple[SpeechStop, float]:
    vad = SileroVad()
    seg = Segmenter(vad, VadConfig(stop_ms=400))
    audio = np.concatenate([silence(0.3), speech, silence(1.5)])
    t, stops = 0, []
    for i in range(0, audio.size, 320):
        if turn_ms is not None and seg.speaking:
            seg.end_turn_after(turn_ms, "a complete request (test)")
        for ev in seg.feed(audio[i:i + 320], t + i * 62500):
            if isinstance(ev, SpeechStop):
                stops.append(ev)
    assert len(stops) == 1
    stop = stops[0]
    return stop, (stop.decided_ns - stop.speech_end_ns) / 1e6


def test_the_vad_ends_the_turn_sooner_after_a_complete_request():
    speech = synthesize("Go to the kitchen.")
    default, waited = _stop_after(speech, None)
    assert 400 <= waited < 500 and default.turn == "400 ms of silence"
    sooner, waited_less = _stop_after(speech, 200)
    assert 200 <= waited_less < 300
    assert sooner.turn == "200 ms of silence after a complete request (test)"
    assert sooner.speech_end_ns == default.speech_end_ns  # the same speech, only decided sooner
