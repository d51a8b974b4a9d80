"""Kill-point harness for the fault-injection suite (tests/test_reliability_kill.py).

A stage runs as a real ``divscope`` subprocess; it is killed with SIGKILL (its whole process group) at a kill
point: a seeded delay, or the moment a chosen file appears. After the kill every file visible under its final
name must already be complete (byte-identical to the uninterrupted run's file), and a rerun must end with
final outputs byte-identical to the uninterrupted run. Half-written temporaries live in hidden ``.name.*.tmp``
folders (``divscope.store.atomic``), which are not outputs and are skipped here.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# JSON keys that record how a run went rather than what it produced (wall times, how much was reused or
# resumed, the mean loss of the steps this process ran): dropped before comparing bytes.
VOLATILE_KEYS = frozenset({"time", "times", "built_at", "seconds", "cache_hits", "requests_sent", "load_seconds",
                           "train_seconds", "seconds_per_step", "seconds_per_item", "train_seconds_per_step",
                           "resumed_from", "train_loss", "disk_bytes"})  # disk_bytes: includes the wall times' text


def env() -> dict[str, str]:
    return {**os.environ, "DIVSCOPE_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "divscope.cli", *args]


def run_to_end(argv: list[str], timeout: float = 900, log: list[str] | None = None) -> float:
    """Run a stage uninterrupted; returns its wall time (raises with its output if it fails). Its stdout and
    stderr are appended to ``log`` when given."""
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env())
    if log is not None:
        log += [proc.stdout, proc.stderr]
    if proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.monotonic() - t0


@dataclass(frozen=True)
class KillPoint:
    """When to kill: ``delay`` seconds after start, as soon as ``when()`` is true (a file appeared), or, with
    ``failpoint``, where the process reaches ``divscope.store.failpoint.failpoint(failpoint)`` and kills itself
    (for points an outside watcher cannot hit: the next write follows within microseconds)."""

    name: str
    delay: float | None = None
    when: Callable[[], bool] | None = None
    failpoint: str | None = None


def delays(stage: str, count: int, duration: float) -> list[KillPoint]:
    """``count`` seeded kill delays spread over (5%, 60%) of the uninterrupted run's wall time (a rerun under
    less load can be faster than the reference: later delays would often come after the end)."""
    rng = random.Random(f"divscope-kill-{stage}")
    return [KillPoint(f"delay{i}", delay=duration * rng.uniform(0.05, 0.6)) for i in range(count)]


def appears(root: Path, pattern: str, at_least: int = 1) -> Callable[[], bool]:
    """A trigger: at least ``at_least`` paths match ``root.glob(pattern)``."""
    def check() -> bool:
        try:
            return sum(1 for _ in root.glob(pattern)) >= at_least
        except OSError:  # a temporary folder vanished while glob walked it (the stage renamed it): look again
            return False
    return check


def lines_in(path: Path, at_least: int) -> Callable[[], bool]:
    """A trigger: ``path`` holds at least ``at_least`` complete lines."""
    def check() -> bool:
        try:
            return path.read_bytes().count(b"\n") >= at_least
        except OSError:
            return False
    return check


def kill_at(argv: list[str], point: KillPoint, timeout: float = 900) -> bool:
    """Start ``argv``; SIGKILL its process group at ``point``. True if it was still running when killed."""
    extra = {"DIVSCOPE_FAILPOINT": point.failpoint} if point.failpoint else {}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env={**env(), **extra})
    t0 = time.monotonic()
    try:
        if point.failpoint:  # it kills itself there (SIGKILL), or finishes without passing the point
            proc.wait(timeout=timeout)
            if proc.returncode not in (0, -signal.SIGKILL):
                raise AssertionError(f"{argv} failed before its kill point:\n{proc.stderr.read().decode()[-3000:]}")
            return proc.returncode == -signal.SIGKILL
        while proc.poll() is None and time.monotonic() - t0 < timeout:
            if point.delay is not None and time.monotonic() - t0 >= point.delay:
                break
            if point.when is not None and point.when():
                break
            time.sleep(0.002)
        alive = proc.poll() is None
        if alive:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        if not alive and proc.returncode != 0:
            raise AssertionError(f"{argv} failed before its kill point:\n{proc.stderr.read().decode()[-3000:]}")
        return alive
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def normalise(rel: str, data: bytes) -> bytes:
    """JSON and JSONL files lose their volatile keys (``VOLATILE_KEYS``); anything else is compared as is."""
    if rel.endswith(".jsonl"):
        return b"\n".join(normalise(rel[:-1], line) for line in data.split(b"\n"))
    if not rel.endswith(".json"):
        return data
    try:
        obj = json.loads(data)
    except ValueError:
        return data  # not JSON: compared raw (and will differ from a good reference)

    def strip(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in VOLATILE_KEYS}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    return json.dumps(strip(obj), sort_keys=True).encode()


def snapshot(root: Path, skip: Iterable[str] = ()) -> dict[str, bytes]:
    """Normalised bytes of every visible file under ``root`` (relative posix path -> bytes)."""
    skip = tuple(skip)
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and _visible(p, root):
            rel = p.relative_to(root).as_posix()
            if not rel.startswith(skip):
                out[rel] = normalise(rel, p.read_bytes())
    return out


def _grown_part(data: bytes, final: bytes) -> bool:
    """An index that grows entry by entry (e.g. LLaMA-Factory's dataset_info.json): complete JSON whose every
    entry is already the finished entry."""
    try:
        got, want = json.loads(data), json.loads(final)
    except ValueError:
        return False
    return isinstance(got, dict) and isinstance(want, dict) and all(want.get(k) == v for k, v in got.items())


def partial_files(root: Path, reference: dict[str, bytes], skip: Iterable[str] = (),
                  growing: Iterable[str] = ()) -> list[str]:
    """Files visible under their final name that are not the finished file (empty list = none).

    ``growing``: file names that are legitimately rewritten as entries are added; each version must be
    complete JSON holding finished entries only."""
    growing = set(growing)
    bad = []
    for rel, data in snapshot(root, skip).items():
        if rel not in reference:
            bad.append(f"{rel}: not an output of the uninterrupted run")
        elif Path(rel).name in growing and _grown_part(data, reference[rel]):
            continue
        elif data != reference[rel]:
            bad.append(f"{rel}: differs from the finished file ({len(data)} vs {len(reference[rel])} bytes)")
    return bad


def diff(got: dict[str, bytes], want: dict[str, bytes]) -> list[str]:
    """What differs between two snapshots (empty list = byte-identical)."""
    out = [f"missing {k}" for k in sorted(set(want) - set(got))]
    out += [f"extra {k}" for k in sorted(set(got) - set(want))]
    out += [f"differs {k}{_keys_differing(got[k], want[k])}" for k in sorted(set(got) & set(want))
            if got[k] != want[k]]
    return out


def _keys_differing(a: bytes, b: bytes) -> str:
    """For JSON objects, which top-level keys differ (to make a failure readable)."""
    try:
        x, y = json.loads(a), json.loads(b)
    except ValueError:
        return ""
    if not (isinstance(x, dict) and isinstance(y, dict)):
        return ""
    keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
    return f" (keys {', '.join(f'{k}: {x.get(k)!r:.80} vs {y.get(k)!r:.80}' for k in keys)})"
