"""Spoken numbers as digits (no rclpy): what a recognizer writes as words, the parser needs as
numbers, both to match sentence templates and to check that a model's numbers were said.

    normalize_numbers("turn a hundred and eighty degrees")   -> "turn 180 degrees"
    normalize_numbers("move one and a half meters")           -> "move 1.5 meters"
    normalize_numbers("back up half a meter")                 -> "back up 0.5 meter"
    normalize_numbers("move back a meter and a half")         -> "move back 1.5 meter"
    normalize_numbers("two point five meters")                -> "2.5 meters"
    numbers_in("rotate 45 degrees then 3.5")                  -> [45.0, 3.5]

"one" stays a word where it is a pronoun ("that one", "the red one").
"""
from __future__ import annotations

import re

UNITS = {"zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
         "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
         "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
         "eighteen": 18, "nineteen": 19}
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60,
        "seventy": 70, "eighty": 80, "ninety": 90}
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
# Measure words after which "a"/"an" means one ("a meter", "a meter and a half").
MEASURES = {"meter", "meters", "metre", "metres", "degree", "degrees", "centimeter",
            "centimeters", "centimetre", "centimetres", "foot", "feet", "inch", "inches",
            "second", "seconds", "minute", "minutes", "step", "steps", "turn", "turns", "kilometer",
            "kilometers", "kilometre", "kilometres", "mile", "miles", "yard", "yards"}
_PRONOUN_BEFORE = {"that", "this", "the", "which", "each", "any", "every", "no", "another",
                   "other", "red", "blue", "green", "big", "small", "last", "first", "next",
                   "same", "little", "left", "right"}
_NUMBER_RX = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.]*\d)")
_TOKEN_RX = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*|\d+(?:\.\d+)?|[^\sA-Za-z\d]+")


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _w(tok: str) -> str:
    return tok.lower()


def _is_number_word(w: str) -> bool:
    parts = w.split("-")
    return all(p in UNITS or p in TENS for p in parts)


def _read_integer(words: list[str], i: int) -> tuple[float, int]:
    """A spoken integer at words[i]: (value, words used); (0, 0) when none."""
    total, current, j, seen = 0, 0, i, False
    while j < len(words):
        w = _w(words[j])
        if _is_number_word(w):
            for p in w.split("-"):
                current += UNITS.get(p, 0) + TENS.get(p, 0)
            seen = True
        elif w in SCALES and (seen or (j > i and _w(words[j - 1]) in ("a", "an"))):
            scale = SCALES[w]
            if scale == 100:
                current = (current or 1) * 100
            else:
                total += (current or 1) * scale
                current = 0
            seen = True
        elif w in ("a", "an") and not seen and j + 1 < len(words) \
                and _w(words[j + 1]) in SCALES:
            pass  # "a hundred"
        elif w == "and" and seen and j + 1 < len(words) and (
                _is_number_word(_w(words[j + 1])) and _w(words[j + 1]) not in ("oh",)):
            pass  # "a hundred and eighty"
        else:
            break
        j += 1
    if not seen:
        return 0.0, 0
    # "and" never ends a number
    while j > i and _w(words[j - 1]) in ("and", "a", "an"):
        j -= 1
    return float(total + current), j - i


def _read_number(words: list[str], i: int) -> tuple[float, int]:
    """A spoken or written number at words[i], with halves and decimals: (value, used)."""
    w = _w(words[i])
    nxt = _w(words[i + 1]) if i + 1 < len(words) else ""
    if w == "half" and nxt in ("a", "an"):  # "half a meter"
        return 0.5, 2
    if w in ("a", "an") and nxt == "half":  # "a half meter"
        return 0.5, 2
    if w in ("a", "an") and nxt in ("quarter",):
        return 0.25, 2
    if re.fullmatch(r"\d+(?:\.\d+)?", w):
        value, used = float(w), 1
    else:
        value, used = _read_integer(words, i)
        if not used:
            return 0.0, 0
        if w == "one" and i > 0 and _w(words[i - 1]) in _PRONOUN_BEFORE and used == 1 and \
                nxt not in MEASURES:
            return 0.0, 0  # "that one", "the red one"
        if w == "oh" and used == 1:
            return 0.0, 0
    j = i + used
    # "two point five"
    if j + 1 < len(words) and _w(words[j]) == "point":
        digits = []
        k = j + 1
        while k < len(words) and _w(words[k]) in UNITS and UNITS[_w(words[k])] < 10:
            digits.append(str(UNITS[_w(words[k])]))
            k += 1
        if digits:
            value = float(f"{_fmt(value)}.{''.join(digits)}")
            j = k
    # "one and a half", "two and a quarter"
    if j + 2 < len(words) and _w(words[j]) == "and" and _w(words[j + 1]) in ("a", "an"):
        frac = {"half": 0.5, "quarter": 0.25}.get(_w(words[j + 2]))
        if frac is not None:
            return value + frac, j + 3 - i
    return value, j - i


# How recognizers write spoken numbers: "5,000" and "100 and 80" (one hundred and eighty).
_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d,])")
_HUNDRED_AND = re.compile(r"(?<![\d.])(\d*[1-9]00),? and (\d{1,2})(?![\d.])")


def normalize_numbers(text: str) -> str:
    """Spoken numbers to digits; everything else (words, punctuation) kept as it was."""
    text = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), text)
    tokens = _TOKEN_RX.findall(text)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not re.match(r"[A-Za-z\d]", tok):
            out.append(tok)
            i += 1
            continue
        value, used = _read_number(tokens, i)
        if used:
            nxt = _w(tokens[i + used]) if i + used < len(tokens) else ""
            # "a meter and a half", "two meters and a half"
            if nxt in MEASURES and i + used + 3 < len(tokens) + 0 and \
                    [_w(t) for t in tokens[i + used + 1:i + used + 4]] == ["and", "a", "half"]:
                out += [_fmt(value + 0.5), tokens[i + used]]
                i += used + 4
                continue
            out.append(_fmt(value))
            i += used
            continue
        # "a meter", "a meter and a half"
        if _w(tok) in ("a", "an") and i + 1 < len(tokens) and _w(tokens[i + 1]) in MEASURES:
            rest = [_w(t) for t in tokens[i + 2:i + 5]]
            if rest == ["and", "a", "half"]:
                out += ["1.5", tokens[i + 1]]
                i += 5
            else:
                out += ["1", tokens[i + 1]]
                i += 2
            continue
        out.append(tok)
        i += 1
    return _HUNDRED_AND.sub(lambda m: str(int(m.group(1)) + int(m.group(2))), _join(out))


def _join(tokens: list[str]) -> str:
    text = ""
    for tok in tokens:
        if not text:
            text = tok
        elif re.match(r"[.,!?;:)\]}'\"]", tok) and not re.match(r"\d", tok):
            text += tok
        else:
            text += " " + tok
    return text


def normalize_request(text: str) -> str:
    """Lower-case words with spoken numbers as digits, punctuation as spaces (decimal points
    kept): "Move back two and a half meters!" -> "move back 2.5 meters"."""
    text = normalize_numbers(text).lower().replace("\u2019", "'")
    text = re.sub(r"(?<=\d)\.(?=\d)", "\x00", text)
    text = re.sub(r"[^a-z0-9'\x00 ]+", " ", text).replace("\x00", ".")
    return " ".join(text.split())


def numbers_in(text: str) -> list[float]:
    """Every number said in `text` (spoken or written), in order."""
    return [float(m) for m in _NUMBER_RX.findall(normalize_numbers(text))]
