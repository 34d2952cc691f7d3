"""Shared fixtures: one private ROS domain per test run, in-process nodes, node processes."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TEST_DIR = Path(__file__).resolve().parent
REPO_ROOT = TEST_DIR.parent


def _check_environment() -> str | None:
    try:
        import locara_ros.msg  # noqa: F401  (generated: proves the built package is first)
        import rclpy  # noqa: F401
    except ImportError as e:
        return (f"{e}: the tests need the built package. Run `bash tools/test.sh`, or "
                "`bash tools/setup.sh && . locara_env.sh` before pytest.")
    return None


_ENV_ERROR = _check_environment()
if _ENV_ERROR:  # a clear message instead of dozens of import errors
    raise pytest.UsageError(_ENV_ERROR)

from locara_ros.testing.domain import DomainLease  # noqa: E402
from locara_ros.testing.inprocess import RosHarness  # noqa: E402
from locara_ros.testing.processes import ProcessGroup  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def ros_domain():
    """This run's own ROS_DOMAIN_ID (file-locked), localhost-only discovery."""
    lease = DomainLease()
    domain_id = lease.acquire()
    sys.stderr.write(f"\n[locara] ROS_DOMAIN_ID={domain_id}, localhost-only discovery\n")
    yield domain_id
    lease.release()


@pytest.fixture
def ros(ros_domain):
    """In-process nodes spun by an executor thread: ros.node(), ros.collect(), ros.call()."""
    harness = RosHarness()
    yield harness
    harness.shutdown()


@pytest.fixture
def procs(ros_domain, tmp_path, request):
    """Real processes: procs.start(NodeProcess.node("asr", log_dir=procs.log_dir, ...)).

    All are stopped at the end of the test; their logs are attached to a failing test's report.
    """
    group = ProcessGroup(str(tmp_path / "logs"))
    yield group
    group.stop_all()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        sys.stderr.write("\n" + group.logs() + "\n")


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(scope="session")
def support_dir() -> Path:
    return TEST_DIR / "support"


def pytest_report_header(config):
    import locara_ros
    return [f"locara_ros from: {', '.join(locara_ros.__path__)}",
            f"RMW_IMPLEMENTATION={os.environ.get('RMW_IMPLEMENTATION', '(default)')}"]
