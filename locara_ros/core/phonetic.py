"""Does a short utterance *sound like* a stop phrase? (No ROS here.)

Whisper tiny.en hears an isolated "halt" as "Alt.", "abort" as "aboard.", "stand still" as
"stand, sail." (bench/stop.py). Those transcripts match no stop phrase and no template, so the
robot would not stop. A stop is the safe side of a mistake, so a *short* transcript that no rule
turned into a command and whose sounds are within a small edit distance of a stop phrase stops
the robot too (:meth:`StopSoundAlike.match`).

Sounds come from espeak-ng (the phonemizer that ships inside the piper-tts wheel, which the tts
node needs anyway): text -> IPA, stress and length marks dropped. The distance is a weighted
Levenshtein distance over phonemes: a vowel for another vowel or a voiced for an unvoiced
consonant (t/d, p/b, s/z, ...) costs 0.5, a lost or added "h" or schwa 0.5, anything else 1;
it is divided by the stop phrase's length. At the default 0.25: "Alt." -> halt (0.25), "aboard."
-> abort (0.1), "stand, sail." -> stand still (0.11); "hall", "say", "eight", "top" alone would
stop the robot too; none of 642 transcripts of spoken ordinary requests nor 303 typed ones does.
"""
from __future__ import annotations

import logging
import re
import threading
import unicodedata
from typing import Callable, Iterable

log = logging.getLogger(__name__)

Phonemizer = Callable[[str], list[str]]

_VOWELS = frozenset("aeiouæɐɑɒɔəɚɛɜɝɪʊʌyɨʉɘɵɤøœɶɯ")
_NEAR = tuple(frozenset(p) for p in ("td", "pb", "kɡ", "sz", "fv", "θð", "ʃʒ", "tɾ", "dɾ", "ɹɚ",
                                     "mn", "nŋ"))
_WEAK = frozenset("hə")  # sounds a recognizer drops or adds easily
_MARKS = frozenset("ˈˌːˑ")
_WORD = re.compile(r"[a-z0-9']+")
_PAUSE = re.compile(r"[,.!?;:…]+")


class EspeakPhonemes:
    """Text -> phonemes with the espeak-ng inside piper-tts (thread-safe: espeak-ng keeps
    global state). Raises ImportError/RuntimeError when piper-tts is not installed."""

    def __init__(self, voice: str = "en-us") -> None:
        from piper.phonemize_espeak import EspeakPhonemizer

        self._espeak = EspeakPhonemizer()
        self._voice = voice
        self._lock = threading.Lock()
        self("stop")  # fail now, not at the first stop

    def __call__(self, text: str) -> list[str]:
        with self._lock:
            sentences = self._espeak.phonemize(self._voice, text)
        return [c for s in sentences for c in s
                if c not in _MARKS and c.strip() and not unicodedata.combining(c)
                and unicodedata.category(c)[0] not in "PZ"]


def _substitution(a: str, b: str) -> float:
    if a == b:
        return 0.0
    if a in _VOWELS and b in _VOWELS:
        return 0.5
    if any(a in pair and b in pair for pair in _NEAR):
        return 0.5
    return 1.0


def _indel(a: str) -> float:
    return 0.5 if a in _WEAK else 1.0


def sound_distance(x: list[str], y: list[str]) -> float:
    """Weighted edit distance between two phoneme sequences (see the module docstring)."""
    prev = [0.0]
    for b in y:
        prev.append(prev[-1] + _indel(b))
    for a in x:
        cur = [prev[0] + _indel(a)]
        for j, b in enumerate(y, 1):
            cur.append(min(prev[j] + _indel(a), cur[j - 1] + _indel(b),
                           prev[j - 1] + _substitution(a, b)))
        prev = cur
    return prev[-1]


class StopSoundAlike:
    """Which stop phrase a short transcript sounds like, if any.

    Candidates: the whole transcript and its last part after a pause (a comma or full stop in
    the transcript), without the schema's filler words at either end; a candidate of more words
    than the phrase plus one is never a match, so a real request is not read as a stop."""

    def __init__(self, phrases: Iterable[str], filler: Iterable[str], max_ratio: float,
                 phonemizer: Phonemizer) -> None:
        self.max_ratio = float(max_ratio)
        self._phonemes = phonemizer
        phrases = [" ".join(_WORD.findall(p.lower())) for p in phrases]
        self._phrases = {p: phonemizer(p) for p in phrases if p}
        self._filler = frozenset(f.lower() for f in filler) - set(self._phrases)

    def match(self, text: str) -> tuple[str, float] | None:
        """(stop phrase, distance ratio) of the closest phrase within `max_ratio`, else None."""
        if self.max_ratio <= 0 or not self._phrases:
            return None
        parts = [p for p in _PAUSE.split(text) if p.strip()]
        candidates = [text] + parts[-1:] if len(parts) > 1 else [text]
        best: tuple[str, float] | None = None
        for candidate in candidates:
            words = _WORD.findall(candidate.lower())
            while words and words[0] in self._filler:
                words = words[1:]
            while words and words[-1] in self._filler:
                words = words[:-1]
            if not words or len(words) > 4:
                continue
            sounds = self._phonemes(" ".join(words))
            for phrase, target in self._phrases.items():
                if len(words) > len(phrase.split()) + 1 or not target:
                    continue
                ratio = sound_distance(sounds, target) / len(target)
                if ratio <= self.max_ratio and (best is None or ratio < best[1]):
                    best = (phrase, ratio)
        return best


_shared: list[Phonemizer | None] = []
_shared_lock = threading.Lock()


def espeak_or_none() -> Phonemizer | None:
    """The process's espeak-ng phonemizer (espeak-ng is process-global), or None (logged once)
    when piper-tts is not installed."""
    with _shared_lock:
        if not _shared:
            try:
                _shared.append(EspeakPhonemes())
            except Exception as e:  # noqa: BLE001 - only disables the sound-alike check
                log.warning("no espeak-ng phonemizer (piper-tts): %s", e)
                _shared.append(None)
        return _shared[0]
