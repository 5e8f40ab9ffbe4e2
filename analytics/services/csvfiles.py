"""Reading the CSV files partners and analysts hand us: any common encoding, streamed, with line numbers."""

import codecs
import csv
import io
import os
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
    line: int
    reason: str


class CsvStream:
    """Stream a CSV file in batches of columns after checking its header.

    ``required`` columns must all be present (in any order); other columns are kept
    when listed in ``optional`` or when ``keep_extra`` is set, and otherwise ignored. Rows with the wrong number of
    fields are reported as malformed, never guessed at.
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
        self._reader = csv.reader(text)
        self.header = self._read_header()

    def _read_header(self) -> list[str]:
        try:
            header = [name.strip().lower() for name in next(self._reader)]
        except StopIteration:
            raise ApplicationError(
                f"{self.path} is empty; expected a header: {','.join(self.required)}", code="header"
            ) from None
        except UnicodeDecodeError:
            raise ApplicationError(
                f"{self.path} is not valid {self.encoding}; pass --encoding", code="encoding"
            ) from None
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
        line = reader.line_num + 1
        try:
            for row in reader:
                if len(row) != width:
                    if row and any(field.strip() for field in row):
                        self.malformed.append(MalformedRow(line, f"expected {width} fields, found {len(row)}"))
                else:
                    lines.append(line)
                    rows.append([row[i] for i in positions])
                line = reader.line_num + 1
                if len(rows) >= self.batch_rows:
                    yield self._batch(lines, rows, wanted)
                    lines, rows = [], []
                    if on_progress:
                        on_progress(self.bytes_read)
        except UnicodeDecodeError:
            raise ApplicationError(
                f"{self.path} is not valid {self.encoding} near line {line}; pass --encoding",
                code="encoding",
            ) from None
        except csv.Error as error:
            raise ApplicationError(f"{self.path} line {line}: {error}", code="malformed") from None
        if rows:
            yield self._batch(lines, rows, wanted)
        if on_progress:
            on_progress(self.size)

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
