"""Incremental sentence splitting for streamed replies (no rclpy).

Text arrives in small deltas (LLM tokens); :class:`SentenceSplitter` hands out each sentence as
soon as it is certainly complete, so speech synthesis can start at the first one. It knows the
usual traps of English text:

* decimal numbers and versions ("2.5", "v1.2") never end a sentence (a dot must be followed by
  white space or the end of the reply);
* abbreviations: titles ("Dr.", "Mr.", "St.") never end one; "e.g.", "i.e." never; "etc.",
  "a.m." and similar only when the next word starts with a capital letter;
* single initials ("J. R. R. Tolkien") do not end one;
* numbered lists ("1. first 2. second", or one item per line) split before each item number;
* ellipses ("..." and "…") end a sentence only before a capitalized word;
* closing quotes and brackets stay with their sentence; a newline always ends a sentence;
* a run-on text longer than ``max_chars`` is cut at the last clause boundary (",", ";", ":",
  dash) or space, so a reply without punctuation cannot hold speech back forever.

Where a decision needs the next word (after "Dr." or "2."), the splitter waits for it; on
``flush()`` (the reply is final) the rest comes out as the last sentence.
"""
from __future__ import annotations

import re

# Never end a sentence (titles and Latin abbreviations that are always followed by more text).
ALWAYS_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "gen", "col", "capt", "lt",
    "sgt", "rev", "hon", "gov", "sen", "rep", "pres", "e.g", "i.e", "cf", "vs", "approx", "no",
    "nos", "fig", "figs", "vol", "ch", "sec", "dept", "univ", "inc", "ltd", "co", "corp", "est",
    "ave", "rd", "blvd", "mins", "min", "hrs", "ca", "viz",
})
# End a sentence only when the next word is capitalized ("... and so on, etc. Then we left").
SOMETIMES_ABBREVIATIONS = frozenset({"etc", "a.m", "p.m", "u.s", "u.k", "jan", "feb", "mar",
                                     "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov",
                                     "dec"})

_TERMINATORS = ".!?…"
_CLOSERS = "\"'”’)]}»"
_WORD_BEFORE_DOT = re.compile(r"([A-Za-z][A-Za-z.]*|\d+)$")
_LIST_MARKER = re.compile(r"^\s*(\d{1,3})[.)]\s")
_CLAUSE_BREAK = re.compile(r"[,;:]\s|\s[-–—]\s")


class SentenceSplitter:
    """Feed text deltas, get complete sentences out (stripped, never empty)."""

    def __init__(self, max_chars: int = 250) -> None:
        if max_chars < 20:
            raise ValueError("max_chars must be at least 20")
        self.max_chars = int(max_chars)
        self._buf = ""
        self._next_item: int | None = None  # expected next list number, once a list started

    @property
    def pending(self) -> str:
        """Text received but not yet handed out as a sentence."""
        return self._buf

    def reset(self) -> None:
        self._buf = ""
        self._next_item = None

    def feed(self, text: str) -> list[str]:
        """Add a delta; return the sentences it completed (possibly none)."""
        if text:
            self._buf += text.replace("\r\n", "\n").replace("\r", "\n")
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """The reply is complete: return every remaining sentence."""
        out = self._drain(final=True)
        rest = self._buf.strip()
        self._buf = ""
        self._next_item = None
        if rest:
            out.append(rest)
        return out

    # ------------------------------------------------------------------ internals
    def _drain(self, final: bool) -> list[str]:
        out = []
        while True:
            cut = self._find_boundary(final)
            if cut is None:
                break
            sentence, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if sentence:
                self._note_list_item(sentence)
                out.append(sentence)
        return out

    def _note_list_item(self, sentence: str) -> None:
        m = _LIST_MARKER.match(sentence + " ")
        if m:
            self._next_item = int(m.group(1)) + 1

    def _find_boundary(self, final: bool) -> int | None:
        """Index just past the first complete sentence in the buffer, or None."""
        buf = self._buf
        start = len(buf) - len(buf.lstrip())
        i = start
        n = len(buf)
        while i < n:
            ch = buf[i]
            if ch == "\n":
                if buf[start:i].strip():
                    return i + 1
                i += 1
                continue
            if ch in _TERMINATORS:
                decision = self._decide(buf, start, i, final)
                if decision is not None:
                    return decision
                # skip the whole run of terminators ("?!", "...") before looking further
                while i + 1 < n and buf[i + 1] in _TERMINATORS:
                    i += 1
            i += 1
        if n - start > self.max_chars:
            return self._forced_cut(buf, start)
        return None

    def _decide(self, buf: str, start: int, i: int, final: bool) -> int | None:
        """At a terminator at index i: return the cut index, or None (not a boundary/undecided)."""
        n = len(buf)
        j = i
        while j + 1 < n and buf[j + 1] in _TERMINATORS:
            j += 1
        run = buf[i:j + 1]
        k = j + 1
        while k < n and buf[k] in _CLOSERS:
            k += 1
        if k >= n:
            return None  # the next character decides ("2." + "5", "Dr" + "." + " Smith")
        if not buf[k].isspace():
            return None  # "2.5", "e.g.x", "U.S.A": no boundary here
        end = k  # cut after terminators and closers
        m = k
        while m < n and buf[m].isspace():
            m += 1
        nxt = buf[m] if m < n else ""  # "" = not known yet
        if "!" in run or "?" in run:
            return end
        if len(run) >= 2 or run == "…":  # ellipsis: pause or end?
            if not nxt:
                return None  # the next word decides (flush() takes the rest)
            return None if nxt.islower() else end
        # a single "."
        word_m = _WORD_BEFORE_DOT.search(buf[start:i])
        word = word_m.group(1) if word_m else ""
        lower = word.lower()
        if word.isdigit():
            return self._number_dot(buf, start, i, word, nxt, final, end)
        if lower in ALWAYS_ABBREVIATIONS or lower.rstrip(".") in ALWAYS_ABBREVIATIONS:
            return None
        if len(word) == 1 and word.isupper() and word != "I":  # an initial: "J. Smith"
            return None
        if lower in SOMETIMES_ABBREVIATIONS or "." in word:
            if not nxt:
                return None
            return end if nxt.isupper() else None
        if nxt and nxt.islower():
            return None  # "approx. three", an unknown abbreviation followed by lowercase
        return end

    def _number_dot(self, buf: str, start: int, i: int, word: str, nxt: str, final: bool,
                    end: int) -> int | None:
        """"N." followed by space: a list marker, or a sentence ending in a number."""
        num_start = i - len(word)
        at_sentence_start = not buf[start:num_start].strip()
        if at_sentence_start and len(word) <= 3:
            self._next_item = int(word) + 1
            return None  # "1. first ..." - the marker opens an item
        if self._next_item is not None and int(word) == self._next_item:
            return num_start  # "... first 2. second": the item ends before its number
        if word == "1" and buf[start:num_start].rstrip().endswith(":"):
            return num_start  # "Do this: 1. open the door": the list starts a new sentence
        if not nxt:
            return None
        return end if not nxt.islower() else None

    def _forced_cut(self, buf: str, start: int) -> int:
        window = buf[start:start + self.max_chars]
        best = None
        for m in _CLAUSE_BREAK.finditer(window):
            if m.start() > self.max_chars // 3:
                best = m.start() + 1
        if best is None:
            space = window.rfind(" ")
            best = space if space > self.max_chars // 3 else len(window)
        return start + best


def split_sentences(text: str, max_chars: int = 250) -> list[str]:
    """All sentences of a complete text."""
    splitter = SentenceSplitter(max_chars)
    return splitter.feed(text) + splitter.flush()
