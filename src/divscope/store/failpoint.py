"""Crash-test hook: a process that SIGKILLs itself at a named point of a write sequence.

The kill tests (``tests/test_reliability_kill.py``) kill stages from outside, when a file appears. Where the
next write follows within microseconds (a featurize's ``latest.json`` after its entry is renamed into place), an
outside watcher cannot land a kill in between on a fast machine; with ``DIVSCOPE_FAILPOINT=NAME`` the process
kills itself exactly there instead. Unset (always, outside those tests), it costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "DIVSCOPE_FAILPOINT"


def failpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
