"""The nodes' parameters as settings classes (locara_ros.core.settings), without ROS: every
default is valid, combinations are checked, and the naming table matches what nodes declare."""
from __future__ import annotations

import dataclasses
import math

import pytest

from locara_ros.core import naming
from locara_ros.core.settings.asr import AsrSettings
from locara_ros.core.settings.command_parser import CommandParserSettings
from locara_ros.core.settings.tts import TtsSettings
from locara_ros.core.settings.vlm import VlmSettings

ALL = {"asr": AsrSettings, "command_parser": CommandParserSettings, "tts": TtsSettings,
       "vlm": VlmSettings}


@pytest.mark.parametrize("node", sorted(ALL))
def test_defaults_are_valid_and_described(node):
    cls = ALL[node]
    for s in cls.specs():
        assert len(s.description) > 10, s.name
        if s.limits is not None:
            lo, hi = s.limits
            assert isinstance(s.default, (int, float)) and not isinstance(s.default, bool)
            assert math.isfinite(s.default) and lo <= s.default <= hi, s
            assert isinstance(lo, type(s.default)) or isinstance(s.default, float), s
        if s.choices is not None:
            assert s.default in s.choices, s
    cls().check()


@pytest.mark.parametrize("node", sorted(ALL))
def test_the_naming_table_names_what_the_node_declares(node):
    declared = {s.name for s in ALL[node].specs()} | {"autostart"}  # autostart: ManagedNode
    assert set(naming.names_of(node)) <= declared, set(naming.names_of(node)) - declared
    for new, old in naming.renamed(node).items():
        assert new in declared and old not in declared, (new, old)


@pytest.mark.parametrize("cls,changes,why", [
    (AsrSettings, {"echo_mode": "half_duplex"}, "was removed: use 'reference'"),
    (VlmSettings, {"subscribe_raw": False, "subscribe_compressed": False}, "no camera"),
    (VlmSettings, {"max_frame_age": 0.0}, "max_frame_age"),
    (TtsSettings, {"publish_audio": False, "play_on_device": False}, "no output"),
])
def test_combinations_are_refused_with_the_reason(cls, changes, why):
    with pytest.raises(ValueError, match=why):
        dataclasses.replace(cls(), **changes).check()


def test_parser_settings_make_the_parser_config():
    c = dataclasses.replace(CommandParserSettings(), history_turns=2, stop_fast_path=False,
                            answer_source="model")
    pc = c.parser_config()
    assert (pc.history_turns, pc.fast_path, pc.answer_source) == (2, False, "model")
    assert pc.max_text_chars == c.max_text_chars and pc.temperature == c.temperature


@pytest.mark.parametrize("name, value, why", [
    ("volume", 0.5, ""),
    ("barge_in", False, ""),
    ("barge_in_min_speech", math.inf, "must be finite"),
    ("barge_in_min_speech", math.nan, "must be finite"),
    ("volume", -1.0, "must be in ["),
    ("volume", "loud", "must be a number"),
    ("volume", True, "must be a number"),
    ("barge_in", 1, "must be true or false"),
    ("voice", "en_US-amy-medium", "fixed at start-up"),
    ("no_such_parameter", 1, "fixed at start-up"),
])
def test_run_time_changes_are_refused_with_the_reason(name, value, why):
    refusal = TtsSettings.runtime_refusal(name, value)
    assert (why in refusal and name in refusal) if why else refusal == "", refusal
