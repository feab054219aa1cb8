"""The physical lines of a CSV file, read by the `csv` module only where a line needs it.

The `csv` module walks every character through its state machine, and is fed one physical line at a
time so every record can name the line it starts on: most of what made a CSV file slower to read
than the same rows as sectioned text (bench/README.md, "Data"). Most lines need none of it. A line
with no quote character, no "\\r" before its end and no cell over `csv.field_size_limit()` is
exactly its text split on the delimiter, which is what the csv module would return for it (strict
quoting has nothing to refuse without a quote; a trailing "\\r" is the "\\r\\n" ending, which the
csv module never sees). Such "plain" lines are handed out in runs, as text; every other line
(quotes, which may open a multi-line record; a "\\r" left inside; an undecodable or over-long line
listed in `bad`) goes through the csv module, one record at a time.
Both read from the same cursor, so a record that spans lines simply consumes them.

`tests/test_data_csv_fast.py` checks that the split gives the same rows as the csv module alone.
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import Iterable, Iterator

from tuneloom.data.lines import Batch
from tuneloom.data.types import InvalidRow


class CsvLines:
    """A cursor over the numbered physical lines, shared by plain runs and the csv module's reader.

    `bad` collects lines that cannot be read as they are (see `csv_rows`): undecodable ones (already
    listed by the line reader) and over-long ones (listed here when the csv module reads them).
    With `plain=False` every line goes through the csv module (the reference the fast path is
    tested against).
    """

    def __init__(self, batches: Iterable[Batch], bad: dict[int, InvalidRow], *, plain: bool = True) -> None:
        self._batches = iter(batches)
        self._plain = plain
        self.bad = bad
        self.items: list[str | InvalidRow] = []
        self.first = 1  # the number of items[0]
        self.pos = 0  # index in items of the next line
        self._stops: list[int] = [0]  # where plain runs stop: the lines the csv module must read, len(items)
        self.hard: set[int] = set()  # the lines the csv module must read, for `csv_rows._records`
        self.source = self._feed()  # what the csv module reads

    @property
    def line(self) -> int:
        """The number of the next line (one past the last line at the end)."""
        return self.first + self.pos

    def _feed(self) -> Iterator[str]:
        """The lines as the csv module reads them: ended by "\\n" alone; an over-long one blank.

        (A generator: resuming one costs less than a `__next__` method, once per line the csv module
        reads.) It keeps no position of its own, so a line given back (`skip_blank`) is read again.
        """
        while self.pos < len(self.items) or self._load():
            item = self.items[self.pos]
            self.pos += 1
            if isinstance(item, str):
                text = item.rstrip("\r")
                if text[-1:].isspace() and "\r" in text:  # e.g. "\r \n": see `line_ending_crs_dropped`
                    text = line_ending_crs_dropped(text)
                yield text + "\n"
            else:
                self.bad[self.first + self.pos - 1] = item
                yield "\n"

    def skip_blank(self) -> str | None:
        """Consume the blank lines; return the next line as the csv module will read it (not consumed)."""
        for line in self.source:
            if line.strip():
                self.pos -= 1  # `_feed` loaded its batch first, so the line is still in `items`
                return line
        return None

    def at_end(self) -> bool:
        """Are all lines consumed? (Loads the next batch when the current one is.)"""
        return self.pos == len(self.items) and not self._load()

    def plain_run(self) -> list[str]:
        """Consume and return the plain lines from here up to the next line the csv module must read.

        A plain line's cells are `line.split(delimiter)`, the last one with its trailing "\\r" (at
        most one) still on: every reader of the cells strips it (see `csv_rows._row_maker`).
        """
        pos = self.pos
        end = self._stops[bisect.bisect_left(self._stops, pos)]
        if end == pos:
            return []
        self.pos = end
        return self.items[pos:end]  # type: ignore[return-value]

    def _load(self) -> bool:
        for first, items in self._batches:
            if items:
                self.first, self.items, self.pos = first, items, 0
                self._stops = self._hard_lines() if self._plain else list(range(len(items) + 1))
                self.hard = set(self._stops[:-1])
                return True
        return False

    def _hard_lines(self) -> list[int]:
        """Indices of the lines that are not plain (see the module docstring), then len(items)."""
        items, limit = self.items, csv.field_size_limit()
        hard = [
            i
            for i, line in enumerate(items)
            if type(line) is not str or '"' in line or "\r" in line[:-1] or len(line) > limit
        ]
        if self.bad:  # undecodable lines, blanked lone "\r": the record that holds them is reported
            end = self.first + len(items)
            hard = sorted({*hard, *(n - self.first for n in self.bad if self.first <= n < end)})
        hard.append(len(items))
        return hard


def line_ending_crs_dropped(line: str) -> str:
    """`line` without the "\\r"s among its trailing whitespace, which keeps its spaces and tabs.

    `lines.lone_cr` counts a "\\r" there as part of the line ending (an editor that pads "\\r\\n" lines,
    "\\r \\n"), as every other format does; inside a quoted cell the csv module would keep it as text.
    """
    body = line.rstrip()
    return body + line[len(body) :].replace("\r", "")
