"""The selector as a Python function: ``divscope.select(ws, strategy, n, ...) -> Subset``.

It runs the code path of ``divscope select`` (``select.subsets.select_one``: eligibility filters, feature builds,
strategy, request), and ``Subset.write`` writes what ``divscope select --out`` writes, byte for byte
(``select.subsets.write_subset``). ``Subset.metrics`` is the metric card of ``divscope metrics``
(``metrics.card.metric_card``, reusing the workspace's cached embeddings, token counts and incidences).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from divscope.io.record import Record
from divscope.io.workspace import Workspace
from divscope.select.settings import SelectSettings
from divscope.select.subsets import Selected, refuse_ignored, select_one, subset_manifest, write_subset
from divscope.settings import parse


class Subset:
    """A selected subset of a workspace's pool: its records in selection order, their ids, its manifest."""

    def __init__(self, selected: Selected):
        self._selected = selected
        self._written: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self._selected.subset.rows)

    def __repr__(self) -> str:
        s = self._selected.subset
        level = "" if s.diversity is None else f", d={s.diversity}"
        return f"Subset({s.strategy}, n={s.size}{level}, seed={s.seed})"

    @property
    def rows(self) -> list[int]:
        """Pool rows of the selected records, in selection order."""
        return [int(r) for r in self._selected.subset.rows]

    @property
    def ids(self) -> list[str]:
        """Record ids, in selection order (the manifest's ``ids``)."""
        return list(self.manifest["ids"])

    def records(self) -> list[Record]:
        """The selected records, in selection order (the order the data file holds them in)."""
        return self._selected.selector.pool.records(self.rows)

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest ``write`` writes beside the data file: after a write, that one; before, the same with
        ``file`` None and ``format`` "auto"."""
        if self._written is not None:
            return self._written
        sel = self._selected
        return subset_manifest(sel.selector, sel.subset, sel.request, None, None)

    def write(self, path: str | Path, fmt: str | None = None) -> Path:
        """Write the records to ``path`` (``fmt``: alpaca | sharegpt | openai | parquet | hf, else from the
        extension) and the manifest beside it as ``<path>.manifest.json``: the bytes ``divscope select --out``
        writes. Returns ``path``."""
        path = Path(path)
        sel = self._selected
        self._written = write_subset(sel.selector, sel.subset, path, fmt, sel.request)
        return path

    def metrics(self, **settings: Any) -> dict[str, Any]:
        """The metric card (``divscope metrics``; ``settings``: the fields of ``MetricSettings``), with the
        subset's ``subset`` entry as a card of the written file has it."""
        from divscope.metrics.card import metric_card, subset_keys

        sel = self._selected
        card = metric_card(self.records(), ws=sel.selector.ws, rows=self.rows, **settings)
        card["subset"] = subset_keys(self.manifest)
        return card


def select(ws: Workspace | str | Path, strategy: str, n: int, d: float | str | None = None, seed: int = 0,
           where: str | None = None, features: str | list[str] | None = None, **options: Any) -> Subset:
    """Exactly ``n`` samples of workspace ``ws`` chosen by ``strategy`` at diversity level ``d`` (the six
    diversity strategies; a decimal or a fraction such as "1/6"), as ``divscope select`` chooses them.

    ``where``: an eligibility expression (``"score >= 4 and turns == 1"``); ``features``: the feature builds to use
    where a level and side has several (keys, unique key prefixes or ``OPTION=VALUE``; ``divscope features WS``).
    ``options``: the other ``divscope select`` options by field name (``side``, ``threshold``, ``score_column``,
    ``typeless``, ``spacing``, ``pruning``, ``length_range``, ``length_side``, ``length_tokenizer``, ``balance_by``). An option the
    strategy ignores (``d`` for ``random``) is an error, as on the command line."""
    data = {"strategy": strategy, "size": n, "diversity": d, "seed": seed, "where": where, "features": features,
            **options}
    settings: SelectSettings = parse(SelectSettings, {k: v for k, v in data.items() if v is not None}, "select")
    given = [k for k, v in {"diversity": d, **options}.items() if v is not None]
    refuse_ignored(settings.strategy, given, spell=lambda name: "d" if name == "diversity" else name)
    return Subset(select_one(ws, settings))
