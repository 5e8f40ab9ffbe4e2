"""Reading the CSV files partners and analysts hand us: any common encoding, streamed, with line numbers."""

import codecs
import csv
import io
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from crossmkt_site.errors import ApplicationError

SNIFF_BYTES = 1 << 16
# GB18030 is a superset of GBK and GB2312, so one codec reads all three exports.
CHINESE_ENCODING = "gb18030"


class _CountingReader(io.RawIOBase):
    """Wrap a binary file and count the bytes read, for a progress bar that needs no seek."""

    def __init__(self, raw):
        self.raw = raw
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.raw.readinto(buffer)
        self.bytes_read += n or 0
        return n


def detect_encoding(sample: bytes) -> str:
    """Return the encoding of a file from its first bytes: UTF-8 (with or without BOM) or GBK/GB18030."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        # A final=False decoder tolerates a character cut in half at the end of the sample.
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        codecs.getincrementaldecoder(CHINESE_ENCODING)().decode(sample, final=False)
        return CHINESE_ENCODING
    except UnicodeDecodeError:
        raise ApplicationError(
            "cannot tell the file's encoding (not UTF-8 or GBK); convert it to UTF-8 or pass --encoding",
            code="encoding",
        ) from None


@dataclass
class CsvBatch:
    """Rows of a CSV file as columns of strings, with the file line each row started on."""

    lines: list[int]
    columns: dict[str, list[str]]

    def __len__(self) -> int:
        return len(self.lines)


@dataclass
class MalformedRow:
    """A line the reader could not turn into a row: where, which column (``*`` when none can be named), and why."""

    line: int
    reason: str
    column: str = "*"


class _Lines:
    """The physical lines of a text, with lines given back read again first.

    ``held`` collects the lines handed out since the caller last cleared it: the lines of the
    record the CSV reader is building.
    """

    def __init__(self, text: io.TextIOBase):
        self._source = iter(text)
        self.pending: deque[str] = deque()
        self.held: list[str] = []

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        text = self.pending.popleft() if self.pending else next(self._source)
        self.held.append(text)
        return text

    def give_back(self, lines: list[str]) -> None:
        """Read these lines again, before any other."""
        self.pending.extendleft(reversed(lines))


def _quote_trouble(text: str) -> tuple[int, str | None]:
    """Scan one physical line as CSV; return the index of the field where a quote goes wrong, and how.

    ``"open"``: a quoted field is still open at the end of the line; ``"after"``: text follows
    a closing quote; ``None``: the line's quotes are sound (the index is then its last field's).
    """
    text = text.rstrip("\r\n")
    end = len(text)
    field = 0
    i = 0
    while True:
        if i < end and text[i] == '"':
            i += 1
            while True:
                j = text.find('"', i)
                if j < 0:
                    return field, "open"
                if text.startswith('"', j + 1):  # a doubled quote stands for one quote
                    i = j + 2
                    continue
                i = j + 1
                break
            if i < end and text[i] != ",":
                return field, "after"
        else:
            j = text.find(",", i)
            i = end if j < 0 else j
        if i >= end:
            return field, None
        i += 1
        field += 1


class CsvStream:
    """Stream a CSV file in batches of columns after checking its header.

    ``required`` columns must all be present (in any order); other columns are kept
    when listed in ``optional`` or when ``keep_extra`` is set, and otherwise ignored. Lines that
    do not make a sound row are reported in ``malformed`` by line, column and reason, never
    guessed at, and the lines around them still read as rows:

    - a row with the wrong number of fields, or with a NUL byte in any field (no database text
      column can hold one), is rejected;
    - a quoted value may run over several lines only in a column the import does not read as a
      value (a note kept with the row, or an ignored column), only when the quote closes and the
      row then has the header's number of fields, and only when none of the lines it takes in
      reads on its own as a whole row. Otherwise the quote was left open: the line it opened on
      is rejected, naming the column, and the lines after it are read again as rows of their own.
      Text after a closing quote (``"a"b``) rejects its line too.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        required: tuple[str, ...],
        optional: tuple[str, ...] = (),
        encoding: str | None = None,
        batch_rows: int = 50_000,
        keep_extra: bool = False,
    ):
        self.path = Path(path)
        self.required = required
        self.optional = optional
        self.batch_rows = batch_rows
        self.keep_extra = keep_extra
        self.malformed: list[MalformedRow] = []
        self.extra_columns: list[str] = []
        try:
            self._binary = self.path.open("rb")
        except FileNotFoundError:
            raise ApplicationError(f"file not found: {self.path}", code="not_found") from None
        except OSError as error:
            raise ApplicationError(f"cannot read {self.path}: {error.strerror}", code="unreadable") from None
        self.size = os.fstat(self._binary.fileno()).st_size
        try:
            self.encoding = encoding or detect_encoding(self._binary.read(SNIFF_BYTES))
            codecs.lookup(self.encoding)
        except LookupError:
            raise ApplicationError(f"unknown encoding {encoding!r}; try utf-8 or gbk", code="encoding") from None
        self._binary.seek(0)
        self._counter = _CountingReader(self._binary)
        text = io.TextIOWrapper(io.BufferedReader(self._counter), encoding=self.encoding, newline="")
        self._lines = _Lines(text)
        self._reader = csv.reader(self._lines, strict=True)
        self.header = self._read_header()
        # The line the next record starts on.
        self._line = len(self._lines.held) + 1
        self._lines.held.clear()

    def _read_header(self) -> list[str]:
        try:
            header = [name.strip().lower() for name in next(self._reader)]
        except csv.Error as error:
            raise ApplicationError(f"{self.path} line 1 (the header): {error}", code="header") from None
        except StopIteration:
            raise ApplicationError(
                f"{self.path} is empty; expected a header: {','.join(self.required)}", code="header"
            ) from None
        except UnicodeDecodeError:
            raise ApplicationError(
                f"{self.path} is not valid {self.encoding}; pass --encoding", code="encoding"
            ) from None
        if any("\x00" in name for name in header):
            raise ApplicationError(
                f"the header of {self.path} contains NUL bytes; if the file is UTF-16, save it as UTF-8",
                code="encoding",
            )
        missing = [name for name in self.required if name not in header]
        if missing:
            raise ApplicationError(
                f"wrong header in {self.path}: missing {', '.join(missing)}; "
                f"expected columns {','.join(self.required)}",
                code="header",
            )
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise ApplicationError(
                f"wrong header in {self.path}: column {', '.join(duplicated)} appears twice", code="header"
            )
        self.extra_columns = [name for name in header if name not in self.required and name not in self.optional]
        return header

    @property
    def bytes_read(self) -> int:
        return self._counter.bytes_read

    def batches(self, on_progress: Callable[[int], None] | None = None) -> Iterator[CsvBatch]:
        """Yield batches of well-formed rows; malformed ones are collected in ``self.malformed``."""
        wanted = [name for name in self.header if self.keep_extra or name in self.required or name in self.optional]
        positions = [self.header.index(name) for name in wanted]
        width = len(self.header)
        lines: list[int] = []
        rows: list[list[str]] = []
        reader = self._reader
        held = self._lines.held
        while True:
            try:
                for row in reader:
                    line = self._line
                    # The common row: one line, the header's width, no NUL. Anything else is looked at closely.
                    if len(held) == 1 and len(row) == width and "\x00" not in held[0]:
                        self._line += 1
                        lines.append(line)
                        rows.append([row[i] for i in positions])
                    elif self._sound(row, line, width):
                        lines.append(line)
                        rows.append([row[i] for i in positions])
                    held.clear()
                    if len(rows) >= self.batch_rows:
                        yield self._batch(lines, rows, wanted)
                        lines, rows = [], []
                        if on_progress:
                            on_progress(self.bytes_read)
                break
            except UnicodeDecodeError:
                raise ApplicationError(
                    f"{self.path} is not valid {self.encoding} near line {self._line + len(held)}; pass --encoding",
                    code="encoding",
                ) from None
            except csv.Error as error:
                self._broken(str(error))
                held.clear()
        if rows:
            yield self._batch(lines, rows, wanted)
        if on_progress:
            on_progress(self.size)

    def _column(self, index: int) -> str:
        return self.header[index] if 0 <= index < len(self.header) else "*"

    def _sound(self, row: list[str], line: int, width: int) -> bool:
        """Judge a record that is not the common one: record what is wrong with it, or return True."""
        held = self._lines.held
        if len(held) > 1:
            index, _ = _quote_trouble(held[0])
            read_as_values = set(self.required) | set(self.optional)
            swallowed = len(row) != width or any(
                ("\n" in field or "\r" in field) and self._column(i) in read_as_values for i, field in enumerate(row)
            )
            if not swallowed:
                swallowed = any(len(next(csv.reader([text]), [])) == width for text in held[1:])
            if swallowed:
                # A record runs over lines only when a quote is open at the end of its first.
                self._reject_and_reread(line, index, "quote not closed on its line")
                return False
        self._line += len(held)
        if len(row) != width:
            if row and any(field.strip() for field in row):
                self.malformed.append(MalformedRow(line, f"expected {width} fields, found {len(row)}"))
            return False
        for index, field in enumerate(row):
            if "\x00" in field:
                self.malformed.append(MalformedRow(line, "contains a NUL byte", self._column(index)))
                return False
        return True

    def _broken(self, error: str) -> None:
        """Record the record the reader refused (its quotes are broken), and read what it took in again."""
        held = self._lines.held
        line = self._line
        index, trouble = _quote_trouble(held[0]) if held else (-1, None)
        if trouble == "open" and len(held) > 1:
            self._reject_and_reread(line, index, "quote not closed on its line")
        elif trouble == "open":
            self.malformed.append(
                MalformedRow(line, "quote not closed before the end of the file", self._column(index))
            )
            self._line += len(held)
        elif trouble == "after":
            self.malformed.append(
                MalformedRow(
                    line, 'text after a closing quote (inside a quoted value write "" for a quote)', self._column(index)
                )
            )
            self._line += len(held)
        else:
            self.malformed.append(MalformedRow(line, error))
            self._line += max(len(held), 1)

    def _reject_and_reread(self, line: int, index: int, reason: str) -> None:
        held = self._lines.held
        last = line + len(held) - 1
        following = f"line {last}" if last == line + 1 else f"lines {line + 1} to {last}"
        self.malformed.append(
            MalformedRow(line, f"{reason} ({following} read as rows of their own)", self._column(index))
        )
        self._lines.give_back(held[1:])
        self._line = line + 1

    @staticmethod
    def _batch(lines: list[int], rows: list[list[str]], names: list[str]) -> CsvBatch:
        columns = {name: [row[i].strip() for row in rows] for i, name in enumerate(names)}
        return CsvBatch(lines=lines, columns=columns)

    def close(self) -> None:
        self._binary.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
