"""VAD state machine on the real Silero model, and the transcript helpers (seam merging with the
real faster-whisper on real speech)."""
from __future__ import annotations

import difflib

import numpy as np
import pytest
from locara_ros.testing.speech import noise, silence, synthesize

from locara_ros.core.transcripts import (
    chunk_plan,
    is_loop,
    merge_chunks,
    merge_overlap,
    normalize_text,
)
from locara_ros.core.vad import (
    WINDOW,
    WINDOW_NS,
    Segmenter,
    SileroVad,
    SpeechAudio,
    SpeechStart,
    SpeechStop,
    VadConfig,
)

RATE = 16000


@pytest.fixture(scope="module")
def vad():
    return SileroVad()


@pytest.fixture(scope="module")
def phrases():
    texts = ["turn left", "go to the kitchen please", "stop"]
    return texts, [synthesize(t) for t in texts]


def run(seg: Segmenter, audio: np.ndarray, chunk: int = 320, t0_ns: int = 5_000_000_000):
    """Feed audio in mic-sized chunks with sample-accurate stamps; return all events."""
    events = []
    for i in range(0, audio.size, chunk):
        events += seg.feed(audio[i:i + chunk], t0_ns + i * 1_000_000_000 // RATE)
    return events


def layout(speech: list[np.ndarray], lead: float, gap: float, tail: float, dbfs=None):
    parts, onsets, ends, t = [silence(lead)], [], [], lead
    for s in speech:  # onset/end of the audible part (Piper pads with a little silence)
        loud = np.flatnonzero(np.abs(s) > 0.02)
        onsets.append(t + loud[0] / RATE)
        ends.append(t + (loud[-1] + 1) / RATE)
        parts += [s, silence(gap)]
        t += s.size / RATE + gap
    parts[-1] = silence(tail)
    audio = np.concatenate(parts)
    if dbfs is not None:
        audio = audio + noise(audio.size / RATE, dbfs=dbfs)[:audio.size]
    return np.clip(audio, -1, 1).astype(np.float32), onsets, ends


def test_utterances_found_in_order_with_hysteresis_and_pre_roll(vad, phrases):
    texts, speech = phrases
    audio, onsets, ends = layout(speech, lead=0.7, gap=1.0, tail=1.0, dbfs=-45)
    cfg = VadConfig(start_ms=96, stop_ms=400, pre_roll_ms=300)
    t0 = 5_000_000_000
    events = run(Segmenter(vad, cfg), audio, t0_ns=t0)
    kinds = [type(e).__name__ for e in events if not isinstance(e, SpeechAudio)]
    assert kinds == ["SpeechStart", "SpeechStop"] * len(texts)
    starts = [e for e in events if isinstance(e, SpeechStart)]
    stops = [e for e in events if isinstance(e, SpeechStop)]
    for k, (start, stop) in enumerate(zip(starts, stops, strict=True)):
        onset = (start.speech_start_ns - t0) / 1e9
        assert onset == pytest.approx(onsets[k], abs=0.15), texts[k]  # "s" is faint
        # Decided within start_ms (+ one window) of the speech start: barge-in needs this.
        assert 0 < start.decided_ns - start.speech_start_ns <= 96_000_000 + WINDOW_NS
        # Pre-roll: 300 ms (rounded to windows) before the first speech sample.
        assert start.speech_offset == round(0.3 * RATE / WINDOW) * WINDOW
        assert (stop.speech_end_ns - t0) / 1e9 == pytest.approx(ends[k], abs=0.15), texts[k]
        # The end is decided after stop_ms of silence, not earlier.
        assert stop.decided_ns - stop.speech_end_ns >= 400_000_000
        assert stop.reason == "silence" and not stop.discarded
        assert stop.duration == pytest.approx(ends[k] - onsets[k], abs=0.3)


def test_silence_and_noise_alone_start_nothing(vad):
    audio = np.concatenate([silence(1.0), noise(3.0, dbfs=-40, seed=3), silence(0.5)])
    assert run(Segmenter(vad), audio) == []


def test_short_utterance_is_discarded_and_long_one_is_cut(vad, phrases):
    _, speech = phrases
    audio, _, _ = layout([speech[0]], lead=0.5, gap=0.0, tail=1.0)
    events = run(Segmenter(vad, VadConfig(min_speech_ms=3000)), audio)
    [stop] = [e for e in events if isinstance(e, SpeechStop)]
    assert stop.discarded

    audio, _, _ = layout([speech[1]], lead=0.5, gap=0.0, tail=1.0)
    events = run(Segmenter(vad, VadConfig(max_utterance_s=0.8)), audio)
    stops = [e for e in events if isinstance(e, SpeechStop)]
    assert stops[0].reason == "max_length"
    assert len([e for e in events if isinstance(e, SpeechStart)]) == len(stops)


def test_flush_ends_an_utterance_in_progress(vad, phrases):
    _, speech = phrases
    seg = Segmenter(vad)
    audio = np.concatenate([silence(0.5), speech[1][: speech[1].size // 2]])
    events = run(seg, audio)
    assert any(isinstance(e, SpeechStart) for e in events) and seg.speaking
    [stop] = seg.flush("audio stopped")
    assert stop.reason == "audio stopped" and not seg.speaking
    assert seg.flush("again") == []


def test_config_is_validated():
    with pytest.raises(ValueError):
        VadConfig(threshold=1.5)
    with pytest.raises(ValueError):
        VadConfig(threshold=0.3, neg_threshold=0.6)
    assert VadConfig(threshold=0.5).neg_threshold == pytest.approx(0.35)


# ---------------------------------------------------------------------------- transcripts
def test_normalize_text():
    assert normalize_text("Drive 2.5 meters, then STOP!") == "drive two point five meters then stop"
    assert normalize_text("  Go to room 12 -- it's  open. ") == "go to room twelve its open"
    assert normalize_text("100%") == "one hundred percent"


def test_chunk_plan_covers_with_overlap():
    plan = chunk_plan(100, 30, 5)
    assert plan == [(0, 30), (25, 55), (50, 80), (75, 100)]
    assert chunk_plan(20, 30, 5) == [(0, 20)]
    assert chunk_plan(0, 30, 5) == []


def test_merge_overlap_keeps_shared_words_once():
    assert merge_overlap("please drive forward two meters and then",
                         "meters and then turn left at the door") == \
        "please drive forward two meters and then turn left at the door"
    # Cut words at both edges: the run in the middle of the overlap decides.
    assert merge_overlap("go back to the charging sta", "ack to the charging station now") == \
        "go back to the charging station now"
    # Nothing in common: nothing is dropped.
    assert merge_overlap("turn left", "stop now") == "turn left stop now"
    assert merge_chunks(["a b c d", "c d e f", "e f g"]) == "a b c d e f g"


def test_decoding_loops_are_recognised():
    """Whisper looping on a short stretch (seen on an early partial of "Go to the kitchen")."""
    assert is_loop("go, go, go, go, go, go, go, go, go")
    assert is_loop("to the to the to the to the")
    assert is_loop("I'm sorry, I'm sorry, I'm sorry, I'm sorry")
    assert not is_loop("go to the kitchen")
    assert not is_loop("no, no, no")  # three is speech, not a loop
    assert not is_loop("turn left, turn left again and then turn left")
    assert not is_loop("")


def test_long_speech_in_overlapping_chunks_has_no_duplicates_at_seams():
    """Real speech longer than the chunk length, transcribed chunk by chunk by the real
    faster-whisper, merges into the text of the whole (no word repeated at the seams)."""
    from locara_ros.core.backends.asr import FasterWhisperTranscriber
    from locara_ros.core.models import resolve_whisper

    sentences = ["pick up the red ball and look at the table",
                 "then go back to the charging station",
                 "turn around and come back to the kitchen"]
    audio = np.concatenate([np.concatenate([synthesize(s), silence(0.15)]) for s in sentences])
    reference = normalize_text(" ".join(sentences)).split()
    asr = FasterWhisperTranscriber(resolve_whisper("tiny.en"))
    plan = chunk_plan(audio.size, int(3.0 * RATE), int(1.0 * RATE))
    assert len(plan) >= 3
    texts = [asr.transcribe(audio[a:b], "en").text for a, b in plan]
    merged = normalize_text(merge_chunks(texts)).split()
    ratio = difflib.SequenceMatcher(a=reference, b=merged).ratio()
    assert ratio >= 0.85, (texts, merged)
    # Every bigram of the merge that is repeated must be repeated in the reference too.
    bigrams = list(zip(merged, merged[1:]))  # noqa: B905 - offsets differ by design
    ref_bigrams = list(zip(reference, reference[1:]))  # noqa: B905
    for bg in set(bigrams):
        assert bigrams.count(bg) <= max(1, ref_bigrams.count(bg)), (bg, merged)
    # The naive concatenation does repeat words: the merge did real work.
    naive = normalize_text(" ".join(texts)).split()
    assert len(naive) > len(merged)


def test_stamps_jumping_back_mid_speech_do_not_discard_it(vad, phrases):
    """A network source stamps chunks on arrival (Wyoming): after a stall, a burst of chunks
    re-anchors its clock backwards. The speech is as long as its samples say, whatever the
    stamps (its duration decides whether it is discarded as too short: read from the stamps it
    was 0.78 s here for 1.44 s of speech, and a larger jump would have discarded it)."""
    _, speech = phrases
    audio, _, _ = layout([speech[1]], lead=0.5, gap=0.0, tail=1.0)
    seg = Segmenter(vad, VadConfig(min_speech_ms=200))
    t0, events, chunk = 5_000_000_000, [], 320
    for i in range(0, audio.size, chunk):
        stamp = t0 + i * 1_000_000_000 // RATE
        if i > 0.9 * RATE:  # from 0.9 s on (mid-speech) the stamps are 0.5 s earlier
            stamp -= 500_000_000
        events += seg.feed(audio[i:i + chunk], stamp)
    [stop] = [e for e in events if isinstance(e, SpeechStop)]
    assert not stop.discarded
    assert stop.duration == pytest.approx(speech[1].size / RATE, abs=0.35)
