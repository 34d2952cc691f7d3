"""The interface contract (locara_ros.core.contract): the README's table is the contract's, the
types it names exist, and the nodes' helpers refuse a type the contract does not name."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from locara_ros.core import contract

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_interface_table_is_the_contract():
    text = README.read_text()
    assert contract.markdown_table() in text, (
        "README's interface table differs from locara_ros.core.contract; paste the output of "
        "python -c 'from locara_ros.core import contract; print(contract.markdown_table())'")


def test_readme_parameter_names_table_is_core_naming():
    from locara_ros.core import naming
    assert naming.markdown_table() in README.read_text(), (
        "README's parameter names table differs from locara_ros.core.naming; paste the output of "
        "python -c 'from locara_ros.core import naming; print(naming.markdown_table())'")


def test_every_endpoint_names_a_real_interface_once():
    names = [e.name for e in contract.ALL]
    assert len(names) == len(set(names))
    for e in contract.ALL:
        pkg, kind, name = e.type.split("/")
        cls = getattr(importlib.import_module(f"{pkg}.{kind}"), name)
        assert kind == ("srv" if e.is_service else "msg")
        assert not e.name.startswith("/"), "names stay relative (a namespace moves them)"
        assert cls is not None


def test_node_helpers_check_the_contract_type(ros):
    from std_msgs.msg import String

    from locara_ros.msg import Transcript
    from locara_ros.nodes.common import RELIABLE_QOS, interface_name, publisher, qos_profile
    node = ros.node("contract_check")
    pub = publisher(node, contract.TRANSCRIPT, Transcript)
    assert pub.topic_name == "/voice/transcript"
    assert interface_name(Transcript) == "locara_ros/msg/Transcript"
    assert qos_profile(contract.RELIABLE) == RELIABLE_QOS
    with pytest.raises(TypeError, match="the contract says locara_ros/msg/Transcript"):
        publisher(node, contract.TRANSCRIPT, String)
