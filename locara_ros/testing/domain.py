"""Give each test run its own ROS 2 domain with localhost-only discovery."""
from __future__ import annotations

import fcntl
import os
import random
import tempfile

# Domain IDs 1..101 map to valid DDS ports on every platform (0 is the default domain, avoid it).
_DOMAIN_RANGE = range(1, 102)


class DomainLease:
    """Hold a ROS_DOMAIN_ID exclusively (a file lock), so parallel runs on a machine never share
    one, and configure the environment for localhost-only discovery.

    The environment is what rclpy.init() in this process and every child process reads.
    """

    def __init__(self) -> None:
        self.domain_id: int | None = None
        self._fd: int | None = None
        self._saved: dict[str, str | None] = {}

    def acquire(self) -> int:
        ids = list(_DOMAIN_RANGE)
        random.shuffle(ids)
        lock_dir = os.path.join(tempfile.gettempdir(), "locara_ros_domains")
        os.makedirs(lock_dir, exist_ok=True)
        for domain_id in ids:
            fd = os.open(os.path.join(lock_dir, f"{domain_id}.lock"), os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._fd, self.domain_id = fd, domain_id
            self._set_env(domain_id)
            return domain_id
        raise RuntimeError(f"no free ROS domain id in {lock_dir}")

    def _set_env(self, domain_id: int) -> None:
        values = {
            "ROS_DOMAIN_ID": str(domain_id),
            # Jazzy and newer:
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            # Humble reads this one (newer distros warn that it is deprecated if both are set,
            # so set it only where the range variable is not understood).
            "ROS_LOCALHOST_ONLY": "1" if os.environ.get("ROS_DISTRO") == "humble" else None,
            "RCUTILS_COLORIZED_OUTPUT": "0",
            "PYTHONUNBUFFERED": "1",
        }
        for key, value in values.items():
            self._saved[key] = os.environ.get(key)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def release(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
