"""The feature builds of a workspace, and which one a selection uses.

A workspace can hold several builds of one (level, side): micro features of two tokenizers, macro features of the
torch and the ONNX runtime, ... (one cache entry each, ``WS/features/<side>-<level>/<key>/``). ``feature_builds``
lists them (``divscope features WS``); ``FeaturePins`` says which one a selection uses:

- a pin is a build's cache key (or a prefix of it that names one build) or ``OPTION=VALUE`` over the builds'
  options (``unit=words``, ``runtime=onnx``);
- a (level, side) with one build of the current pool uses it, pinned or not (what every workspace did before);
- a (level, side) with several builds must be pinned to exactly one: otherwise ``AmbiguousFeaturesError`` names
  them and how to pick (``--features KEY``).

Builds of another pool (a re-ingested workspace) are listed as stale and never chosen.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from divscope.errors import DivscopeError
from divscope.features.base import level_names
from divscope.features.featurize import ENTRY_FILE, LATEST_FILE, features_dir
from divscope.features.incidence import SIDES
from divscope.io.workspace import Workspace

KEY_SHOWN = 10  # characters of a key that listings and errors show (a prefix this long is unique in practice)


class AmbiguousFeaturesError(DivscopeError):
    """A (level, side) has several feature builds and the request did not say which one to use."""


@dataclass(frozen=True)
class FeatureBuild:
    """One cache entry of features: what it was built from and where it lives."""

    level: str
    side: str
    key: str
    config: dict[str, Any]  # the normalised options, as they enter the cache key
    identity: str  # the model / library identity that enters the key besides the options
    size: int  # bytes on disk (the entry's files, engine arrays included)
    built_at: float | None  # seconds since the epoch (entry.json's ``built_at``)
    latest: bool  # the one featurized most recently (``latest.json``): what selections used before pins
    current: bool  # built for the workspace's current pool (False: stale, never chosen)
    path: Path

    @property
    def name(self) -> str:
        return f"{self.side}-{self.level}"

    def value(self, option: str) -> str:
        """The text of one option; an option absent from the config (one a level leaves out at its default, so
        entries built before it existed keep their key) reads as the level setting's default, except macro
        ``runtime``, left out when it is torch (the runtime of every build before runtimes existed)."""
        if option in self.config:
            return _text(self.config[option])
        from divscope.features.settings import LEGACY_RUNTIME, LEVEL_SETTINGS

        if self.level == "macro" and option == "runtime":
            return LEGACY_RUNTIME

        fields = LEVEL_SETTINGS[self.level].model_fields if self.level in LEVEL_SETTINGS else {}
        return _text(fields[option].default) if option in fields else "-"

    def options_text(self, keys: list[str] | None = None) -> str:
        """``k=v`` pairs of its options (``keys``: only these), in key order."""
        return ", ".join(f"{k}={self.value(k)}" for k in (sorted(self.config) if keys is None else keys))


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True)


def _mapping(v: Any) -> dict[str, Any]:
    return dict(v) if isinstance(v, dict) else {}


def _settings_fields(level: str) -> list[str]:
    from divscope.features.settings import LEVEL_SETTINGS

    return list(LEVEL_SETTINGS[level].model_fields) if level in LEVEL_SETTINGS else []


def _size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):  # a file removed while we look
            total += p.stat().st_size if p.is_file() else 0
    return total


def feature_builds(ws: Workspace | str | Path, level: str | None = None, side: str | None = None) -> list[FeatureBuild]:
    """Every feature build of ``ws`` (of one ``level`` / ``side`` if given): sides, then levels, in registry order,
    each (level, side)'s builds oldest first."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    fingerprint = ws.pool.fingerprint if ws.pool_path.exists() else None
    out = []
    for sd in [side] if side else SIDES:
        for lv in [level] if level else level_names():
            d = features_dir(ws, sd, lv)
            if not d.is_dir():
                continue
            try:
                latest = json.loads((d / LATEST_FILE).read_text(encoding="utf-8"))["key"]
            except (OSError, ValueError, KeyError, TypeError):
                latest = None
            builds = []
            for p in d.iterdir():
                if not p.is_dir() or p.name.startswith(".") or not (p / ENTRY_FILE).is_file():
                    continue
                try:
                    entry = json.loads((p / ENTRY_FILE).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue  # unreadable: not a usable entry (featurize rebuilds it)
                if not isinstance(entry, dict):
                    continue
                built_at = entry.get("built_at")
                builds.append(FeatureBuild(lv, sd, p.name, _mapping(entry.get("config")),
                                           str(entry.get("identity", "")), _size(p),
                                           float(built_at) if isinstance(built_at, (int, float)) else None,
                                           p.name == latest, entry.get("pool_fingerprint") == fingerprint, p))
            out += sorted(builds, key=lambda b: (b.built_at or 0.0, b.key))
    return out


def distinguishing(builds: list[FeatureBuild]) -> list[str]:
    """The options whose values differ between ``builds`` (what tells them apart), in key order."""
    keys = sorted({k for b in builds for k in b.config})
    return [k for k in keys if len({b.value(k) for b in builds}) > 1]


def describe(builds: list[FeatureBuild]) -> str:
    """``KEY (opt=v, ...)`` per build, with the options that tell them apart (the model identity if none)."""
    keys = distinguishing(builds)
    parts = []
    for b in builds:
        what = b.options_text(keys) if keys else "same options, another model or library version"
        parts.append(f"{b.key[:KEY_SHOWN]} ({what}{', latest' if b.latest else ''})")
    return "; ".join(parts)


class FeaturePins:
    """Which feature build a selection uses per (level, side); see the module docstring.

    ``pins``: keys (or unique prefixes) and ``OPTION=VALUE`` filters, as ``--features`` takes them. Every pin is
    checked when the object is made (a key that names no build, an option no build has, are errors), not only
    those a strategy later reads.
    """

    def __init__(self, ws: Workspace, pins: list[str] | None = None):
        self.ws = ws
        self.given = list(pins or [])
        self._builds = [b for b in feature_builds(ws) if b.current]
        self.keys: dict[tuple[str, str], FeatureBuild] = {}  # (side, level) -> the build a key pin names
        self.filters: dict[str, str] = {}
        options = {k for b in self._builds for k in b.config} | {
            k for b in self._builds for k in _settings_fields(b.level)}
        for pin in self.given:
            pin = pin.strip()
            name, sep, value = pin.partition("=")
            if sep:
                name = name.strip()
                if name not in options:
                    from divscope.errors import did_you_mean

                    raise DivscopeError(f"--features {pin}: no feature build in {ws.path} has an option {name!r}"
                                        f"{did_you_mean(name, sorted(options))}; `divscope features "
                                        f"{shlex.quote(str(ws.path))}` lists the builds and their options")
                self.filters[name] = value.strip()
                continue
            hits = [b for b in self._builds if b.key.startswith(pin)] if pin else []
            if len(hits) != 1:
                how = "names no feature build of the current pool" if not hits else \
                    f"is a prefix of {len(hits)} builds ({describe(hits)}): give more of the key"
                raise DivscopeError(f"--features {pin!r} {how} in {ws.path}; `divscope features "
                                    f"{shlex.quote(str(ws.path))}` lists them")
            b = hits[0]
            other = self.keys.get((b.side, b.level))
            if other is not None and other.key != b.key:
                raise DivscopeError(f"--features pins {b.name} twice ({other.key[:KEY_SHOWN]} and "
                                    f"{b.key[:KEY_SHOWN]}): give one build per level and side")
            self.keys[(b.side, b.level)] = b

    def request(self) -> dict[str, Any]:
        """What a manifest's request records: the pins as full keys and filters ({} when none were given, so
        requests without pins are what they were before pins existed)."""
        if not self.given:
            return {}
        return {"features": sorted([b.key for b in self.keys.values()]
                                   + [f"{k}={v}" for k, v in self.filters.items()])}

    def build(self, side: str, level: str) -> FeatureBuild | None:
        """The build of (side, level) to use; None where there is no build of the current pool (the caller's
        own error then names the featurize command); AmbiguousFeaturesError where several remain."""
        chosen, builds = self._candidates(side, level)
        if len(chosen) == 1 or not builds:
            return chosen[0] if chosen else None
        raise self._ambiguous(side, level, chosen, builds)

    def embedding_source(self, side: str) -> tuple[str, str] | None:
        """(embedder, runtime) of the sentence embeddings of ``side`` that k-center and distance read: those of
        the side's macro build; several builds that share them need no pin. None: no macro build (the defaults)."""
        chosen, builds = self._candidates(side, "macro")
        sources = sorted({(b.value("embedder"), b.value("runtime")) for b in chosen})
        if len(sources) == 1 or not builds:
            return sources[0] if sources else None
        raise self._ambiguous(side, "macro", chosen, builds, what="sentence embeddings of ")

    def _candidates(self, side: str, level: str) -> tuple[list[FeatureBuild], list[FeatureBuild]]:
        """(the builds the pins leave, all builds of the current pool) of (side, level)."""
        builds = [b for b in self._builds if b.side == side and b.level == level]
        if (side, level) in self.keys:
            return [self.keys[(side, level)]], builds
        filters = {k: v for k, v in self.filters.items() if any(b.value(k) != "-" for b in builds)}
        return [b for b in builds if all(b.value(k) == v for k, v in filters.items())], builds

    def _ambiguous(self, side: str, level: str, chosen: list[FeatureBuild], builds: list[FeatureBuild],
                   what: str = "") -> DivscopeError:
        where = shlex.quote(str(self.ws.path))
        if not chosen:
            wanted = ", ".join(f"{k}={v}" for k, v in self.filters.items())
            return DivscopeError(f"no {side}-{level} feature build in {self.ws.path} has {wanted}: the builds are "
                                 f"{describe(builds)}; pick one with --features KEY (`divscope features {where}`)")
        match = " match the pins" if len(chosen) < len(builds) else ""
        return AmbiguousFeaturesError(
            f"{len(chosen)} {side}-{level} feature builds in {self.ws.path}{match}, and the {what}one to use is not "
            f"named: {describe(chosen)}; pick one with --features KEY (a unique prefix is enough) or OPTION=VALUE "
            f"(`divscope features {where}` lists them)")


def features_rows(builds: list[FeatureBuild]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The columns and rows ``divscope features`` shows: the options listed are those that tell a (level, side)'s
    builds apart (all of them where it has one build)."""
    import time

    groups: dict[tuple[str, str], list[FeatureBuild]] = {}
    for b in builds:
        groups.setdefault((b.level, b.side), []).append(b)
    rows = []
    for (_, _), group in groups.items():
        keys = distinguishing(group) if len(group) > 1 else None
        for b in group:
            when = "-" if b.built_at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(b.built_at))
            state = "latest" if b.latest else ""
            if not b.current:
                state = "stale (another pool)"
            rows.append((b.level, b.side, b.key, b.options_text(keys) or "-", f"{b.size / 1e6:.2f} MB", when, state))
    return ["level", "side", "key", "options", "size", "built", "note"], rows
