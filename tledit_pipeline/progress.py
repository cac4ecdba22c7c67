"""Throughput reporting for long work: documents and tokens per second, at most every few seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("tledit")

Report = Callable[[str], None]


class Progress:
    """Counts work and calls `report` with a one-line summary no more than every `every` seconds."""

    def __init__(self, what: str, total_docs: int, total_tokens: int | None, report: Report | None, every: float = 5.0):
        self.what, self.total_docs, self.total_tokens = what, total_docs, total_tokens
        self.report = report or log.info
        self.every = every
        self.start = self._last = time.perf_counter()
        self.docs = self.tokens = 0

    def advance(self, docs: int, tokens: int) -> None:
        self.docs += docs
        self.tokens += tokens
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self.report(self.line())

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def line(self) -> str:
        el = max(self.elapsed, 1e-9)
        tokens = f"{self.tokens:,}" if self.total_tokens is None else f"{self.tokens:,}/{self.total_tokens:,}"
        return (
            f"{self.what}: {self.docs}/{self.total_docs} docs, {tokens} tokens, "
            f"{self.docs / el:.1f} docs/s, {self.tokens / el:,.0f} tokens/s"
        )

    def done(self) -> str:
        line = self.line() + f" in {self.elapsed:.1f}s"
        self.report(line)
        return line
