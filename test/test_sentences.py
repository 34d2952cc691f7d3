"""Sentence splitter: complete sentences out as early as possible, none broken in the middle."""
from __future__ import annotations

import pytest

from locara_ros.core.sentences import SentenceSplitter, split_sentences


@pytest.mark.parametrize("text, expected", [
    ("Hello there. How are you? I am fine!", ["Hello there.", "How are you?", "I am fine!"]),
    ("The value is 2.5 meters. Next we go.", ["The value is 2.5 meters.", "Next we go."]),
    ("Version v1.2.3 is out. Update now.", ["Version v1.2.3 is out.", "Update now."]),
    ("Dr. Smith went to St. Louis. He liked it.", ["Dr. Smith went to St. Louis.",
                                                   "He liked it."]),
    ("Mr. and Mrs. Jones are here. Hi.", ["Mr. and Mrs. Jones are here.", "Hi."]),
    ("Bring tools, e.g. a hammer. Then come back.", ["Bring tools, e.g. a hammer.",
                                                     "Then come back."]),
    ("Use i.e. this one. Done.", ["Use i.e. this one.", "Done."]),
    ("We need apples, pears, etc. Then we eat.", ["We need apples, pears, etc.",
                                                  "Then we eat."]),
    ("We need apples, pears, etc. and more.", ["We need apples, pears, etc. and more."]),
    ("It is 5 p.m. Then we leave at 6 a.m. tomorrow.", ["It is 5 p.m.",
                                                        "Then we leave at 6 a.m. tomorrow."]),
    ("J. R. R. Tolkien wrote books. Nice.", ["J. R. R. Tolkien wrote books.", "Nice."]),
    ("So do I. Then what.", ["So do I.", "Then what."]),
    ("I counted to 5. Then I stopped.", ["I counted to 5.", "Then I stopped."]),
    ("1. first 2. second 3. third", ["1. first", "2. second", "3. third"]),
    ("Steps: 1. open the door 2. go in 3. close it.",
     ["Steps:", "1. open the door", "2. go in", "3. close it."]),
    ("Here is a list:\n1. Go left.\n2. Go right.\n", ["Here is a list:", "1. Go left.",
                                                      "2. Go right."]),
    ("Well... maybe. Wait... What?", ["Well... maybe.", "Wait...", "What?"]),
    ("Hmm… Okay then.", ["Hmm…", "Okay then."]),
    ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ("(It works.) Really?! Yes.", ["(It works.)", "Really?!", "Yes."]),
    ("first line\nsecond line", ["first line", "second line"]),
    ("no punctuation at all", ["no punctuation at all"]),
    ("   ", []),
])
def test_split_complete_texts(text, expected):
    assert split_sentences(text) == expected


def _stream(text: str, step: int) -> list[tuple[int, str]]:
    """Feed `text` in pieces of `step` characters; (characters fed, sentence) per sentence out."""
    sp = SentenceSplitter()
    out = []
    for i in range(0, len(text), step):
        for s in sp.feed(text[i:i + step]):
            out.append((min(i + step, len(text)), s))
    out += [(len(text), s) for s in sp.flush()]
    return out


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_streaming_gives_the_same_sentences_for_any_chunking(step):
    text = ("Dr. Who measured 2.5 meters, e.g. the door. Lists: 1. a 2. b. Then... "
            "What? It is 3 p.m. Done")
    assert [s for _, s in _stream(text, step)] == split_sentences(text)


def test_first_sentence_comes_out_before_the_reply_is_complete():
    text = "Okay, I am going to the kitchen. It is on the left. See you soon."
    out = _stream(text, 1)
    first_end = text.index("kitchen.") + len("kitchen.")
    # released as soon as the space after the dot arrived, long before the end of the reply
    assert out[0] == (first_end + 1, "Okay, I am going to the kitchen.")
    assert out[1][0] < len(text)


def test_decimal_waits_for_the_next_character():
    sp = SentenceSplitter()
    assert sp.feed("The result is 2.") == []
    assert sp.feed("5 meters. ") == ["The result is 2.5 meters."]
    assert sp.flush() == []


def test_question_and_exclamation_end_without_lookahead():
    sp = SentenceSplitter()
    assert sp.feed("Really? ") == ["Really?"]
    assert sp.feed("Yes! ") == ["Yes!"]


def test_abbreviation_waits_for_the_next_word():
    sp = SentenceSplitter()
    assert sp.feed("Call Dr. ") == []
    assert sp.feed("Smith now. ") == ["Call Dr. Smith now."]


def test_long_run_on_text_is_cut_at_a_clause_break():
    text = ", ".join(["we walk past the red door"] * 20)
    sp = SentenceSplitter(max_chars=100)
    out = sp.feed(text)
    assert out, "a run-on text must not hold speech back"
    assert all(len(s) <= 100 for s in out)
    assert all(s.endswith(",") for s in out)
    rest = sp.flush()
    assert " ".join(out + rest).replace(" ,", ",") == text


def test_flush_and_reset():
    sp = SentenceSplitter()
    sp.feed("Half a sent")
    assert sp.pending == "Half a sent"
    assert sp.flush() == ["Half a sent"]
    assert sp.pending == ""
    sp.feed("Other text")
    sp.reset()
    assert sp.flush() == []


def test_crlf_and_max_chars_validation():
    assert split_sentences("One.\r\nTwo.\rThree.") == ["One.", "Two.", "Three."]
    with pytest.raises(ValueError):
        SentenceSplitter(max_chars=5)
