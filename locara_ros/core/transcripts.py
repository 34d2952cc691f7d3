"""Transcript text helpers: normalization, chunk plans for long audio, seam merging.

Long utterances are transcribed in overlapping chunks (:func:`chunk_plan`); the chunk texts are
joined by :func:`merge_overlap`, which finds the words both chunks heard in the overlap and keeps
them once, so no word is duplicated at a seam.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Sequence

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """Spell a non-negative integer in English (digit by digit beyond 999 999)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    if n < 1_000_000:
        thousands, rest = divmod(n, 1000)
        return (number_to_words(thousands) + " thousand"
                + ("" if rest == 0 else " " + number_to_words(rest)))
    return " ".join(_ONES[int(d)] for d in str(n))


def _spell_number(match: re.Match) -> str:
    text = match.group(0).replace(",", "")
    if "." in text:
        whole, frac = text.split(".", 1)
        return (number_to_words(int(whole or "0")) + " point "
                + " ".join(_ONES[int(d)] for d in frac))
    return number_to_words(int(text))


_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")


def clean_text(text: str) -> str:
    """Whitespace-normalized text (what goes into Transcript.text)."""
    return " ".join(text.split())


def normalize_text(text: str) -> str:
    """Lowercase words without punctuation, digits spelled out: for comparing transcripts.

    "Drive 2.5 meters, then STOP!" -> "drive two point five meters then stop"
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _NUMBER.sub(lambda m: " " + _spell_number(m) + " ", text)
    text = text.replace("%", " percent ")
    text = re.sub(r"[-‐‑–—/]", " ", text)  # hyphens and dashes separate words
    text = re.sub(r"[^\w\s']", " ", text)
    text = text.replace("'", "")
    return " ".join(text.split())


def words(text: str) -> list[str]:
    return clean_text(text).split(" ") if text.strip() else []


def chunk_plan(n_samples: int, chunk_samples: int, overlap_samples: int) -> list[tuple[int, int]]:
    """Overlapping (start, end) sample ranges covering [0, n_samples).

    Every chunk but the last is exactly `chunk_samples` long (so its transcription never changes
    as the utterance grows and can be cached); consecutive chunks share `overlap_samples`.
    """
    if n_samples <= 0:
        return []
    if chunk_samples <= 0 or n_samples <= chunk_samples:
        return [(0, n_samples)]
    if not 0 <= overlap_samples < chunk_samples:
        raise ValueError("overlap must be shorter than a chunk")
    step = chunk_samples - overlap_samples
    plan = []
    start = 0
    while start + chunk_samples < n_samples:
        plan.append((start, start + chunk_samples))
        start += step
    plan.append((start, n_samples))
    return plan


def merge_overlap(left: str, right: str, max_overlap_words: int = 12) -> str:
    """Join two chunk transcripts whose audio overlaps, without repeating the shared words.

    Looks for the longest run of (normalized) words that ends the left text's tail and appears in
    the right text's head (both limited to `max_overlap_words`). The words at either chunk edge
    may be cut off mid-word, so the run is allowed to start after the beginning of the right text
    and end before the end of the left text: the result keeps the left text up to the end of the
    run and continues with the right text after it. Without any shared word, the texts are
    concatenated.
    """
    a, b = words(left), words(right)
    if not a:
        return clean_text(right)
    if not b:
        return clean_text(left)
    na = [normalize_text(w) for w in a]
    nb = [normalize_text(w) for w in b]
    a0 = max(0, len(a) - max_overlap_words)
    b1 = min(len(b), max_overlap_words)
    best = (0, 0, 0, 0.0)  # (length, end index in a, end index in b, score)
    for i in range(a0, len(a)):
        for j in range(b1):
            k = 0
            while i + k < len(a) and j + k < b1 and na[i + k] and na[i + k] == nb[j + k]:
                k += 1
            if k == 0:
                continue
            # Long runs near the seam (end of a, start of b) win: a run far from it is a phrase
            # the speaker said twice ("go back to the ... come back to the"), not the overlap.
            score = k - 0.5 * ((len(a) - (i + k)) + j)
            if score > best[3]:
                best = (k, i + k, j + k, score)
    k, end_a, end_b, _ = best
    # One short common word ("the", "a") can match by chance: demand a run of 2 words, or one
    # word of at least 4 letters sitting right at the seam.
    if k >= 2 or (k == 1 and len(na[end_a - 1]) >= 4 and (len(a) - end_a) + (end_b - 1) <= 2):
        return clean_text(" ".join(a[:end_a] + b[end_b:]))
    return clean_text(" ".join(a + b))


def merge_chunks(texts: Sequence[str], max_overlap_words: int = 12) -> str:
    """Merge the transcripts of consecutive overlapping chunks, left to right."""
    out = ""
    for text in texts:
        out = merge_overlap(out, text, max_overlap_words) if out else clean_text(text)
    return out


def is_loop(text: str, repeats: int = 4) -> bool:
    """True when `text` holds one word or phrase (1-3 words) said `repeats` or more times in a
    row: Whisper's decoding loop on a short stretch of audio ("go, go, go, go, go"), seen on
    early partial transcripts. Not a transcript anyone should see or act on."""
    w = normalize_text(text).split()
    for n in (1, 2, 3):
        run = 1
        for i in range(n, len(w) - n + 1, n):
            run = run + 1 if w[i:i + n] == w[i - n:i] else 1
            if run >= repeats:
                return True
    return False
