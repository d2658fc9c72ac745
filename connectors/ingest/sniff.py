"""Guess how a CSV file is written before reading it: the text encoding (BOM, UTF-8, GBK, Big5) and
the dialect (separator, spaces after separators, quoting), from a sample of its first bytes.

A guess that cannot be made safely is an error asking for ``--encoding`` / ``--delimiter``: a file
read in the wrong encoding or split on the wrong separator is garbled silently, which is worse.
"""

from __future__ import annotations

import codecs
import csv
from dataclasses import dataclass

from connectors.errors import IngestError

SAMPLE_BYTES = 1 << 16
DELIMITERS = (",", ";", "\t", "|")
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
ENCODING_HINT = "pass --encoding (e.g. utf-8, gbk, big5, cp950, latin-1)"


@dataclass(frozen=True)
class Dialect:
    encoding: str  # a Python codec name
    delimiter: str
    skipinitialspace: bool  # `"a", "b"`: spaces after each separator (Smart Data Models CSV exports)
    bom: bool

    @property
    def plain(self) -> bool:
        """True when pyarrow's native reader reads the file as is (UTF-8, no spaces after separators)."""
        return self.encoding in ("utf-8", "utf-8-sig") and not self.skipinitialspace

    def describe(self) -> str:
        sep = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}.get(self.delimiter, repr(self.delimiter))
        return f"{self.encoding}{' with BOM' if self.bom else ''}, {sep}-separated" + \
            (", spaces after separators" if self.skipinitialspace else "")


def _cjk_pairs(sample: bytes) -> list[tuple[int, int]]:
    pairs, i = [], 0
    while i < len(sample) - 1:
        if sample[i] >= 0x81:
            pairs.append((sample[i], sample[i + 1]))
            i += 2
        else:
            i += 1
    return pairs


def _gbk_or_big5(sample: bytes) -> str | None:
    """Both encodings pair a lead byte >= 0x81 with a trail byte; their common characters sit in
    different places. Big5 puts common hanzi at leads 0xA4-0xC6 with trails often in 0x40-0x7E (GB2312
    never uses such trails); GB2312 hanzi run up to lead 0xF7, where Big5 only has rare characters."""
    ok = []
    for enc in ("gbk", "cp950"):
        try:
            sample.decode(enc)
            ok.append(enc)
        except UnicodeDecodeError as exc:
            if exc.start >= len(sample) - 1:  # the sample cut a character in two
                ok.append(enc)
    if len(ok) < 2:
        return ok[0] if ok else None
    pairs = _cjk_pairs(sample)
    big5 = sum(1 for lead, trail in pairs if 0x40 <= trail <= 0x7E or 0xA4 <= lead <= 0xAF)
    gbk = sum(1 for lead, trail in pairs if 0xC7 <= lead <= 0xF7 and trail >= 0xA1)
    return "cp950" if big5 > gbk else "gbk"


def detect_encoding(sample: bytes, name: str) -> tuple[str, bool]:
    """(Python codec, has BOM) for the sample of a file."""
    for bom, enc in _BOMS:
        if sample.startswith(bom):
            return enc, True
    try:
        sample.decode("utf-8")
        return "utf-8", False
    except UnicodeDecodeError as exc:
        if exc.start >= len(sample) - 3 and exc.reason == "unexpected end of data":
            return "utf-8", False
        bad = exc.start
    guess = _gbk_or_big5(sample)
    if guess:
        return guess, False
    line = sample.count(b"\n", 0, bad) + 1
    col = bad - (sample.rfind(b"\n", 0, bad) + 1) + 1
    raise IngestError(f"{name}: line {line} column {col}: byte 0x{sample[bad]:02x} is not valid UTF-8, and the text "
                      f"is not GBK or Big5 either; {ENCODING_HINT}", code="ingest_bad_encoding")


def decode_sample(sample: bytes, encoding: str, name: str) -> str:
    dec = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        return dec.decode(sample, final=False)
    except UnicodeDecodeError as exc:
        line = sample.count(b"\n", 0, exc.start) + 1
        col = exc.start - (sample.rfind(b"\n", 0, exc.start) + 1) + 1
        raise IngestError(f"{name}: line {line} column {col}: byte 0x{sample[exc.start]:02x} is not valid "
                          f"{encoding}; {ENCODING_HINT}", code="ingest_bad_encoding") from exc
    except LookupError as exc:
        raise IngestError(f"unknown encoding {encoding!r}; {ENCODING_HINT}", code="ingest_bad_encoding") from exc


def _lines(text: str, limit: int = 200) -> list[str]:
    lines = text.split("\n")
    if len(lines) > 1:
        lines = lines[:-1]  # the last line of a sample may be cut short
    return [ln for ln in lines[:limit] if ln.strip()]


def detect_dialect(text: str, name: str, delimiter: str | None = None) -> tuple[str, bool]:
    """(separator, spaces after separators): the separator that splits every sampled record into the
    same number (> 1) of fields wins; a tie keeps the order of DELIMITERS."""
    lines = _lines(text)
    if not lines:
        raise IngestError(f"{name}: the file is empty", code="ingest_empty")
    candidates = (delimiter,) if delimiter else DELIMITERS
    best: tuple[float, int, str] | None = None
    for d in candidates:
        try:
            rows = list(csv.reader(lines, delimiter=d, skipinitialspace=True))
        except csv.Error:
            continue
        widths = [len(r) for r in rows]
        if not widths or widths[0] < 2:
            continue
        agree = sum(1 for w in widths if w == widths[0]) / len(widths)
        score = (agree, widths[0], d)
        if best is None or score[:2] > best[:2]:
            best = score
    if best is None:
        if delimiter or len(lines) == 1 or all("," not in ln for ln in lines):
            return delimiter or ",", False  # one column: nothing to choose
        raise IngestError(f"{name}: cannot tell the separator; pass --delimiter", code="ingest_malformed_csv")
    d = best[2]
    raw = list(csv.reader(lines[:50], delimiter=d))
    after = [f for r in raw for f in r[1:]]
    spaced = sum(1 for f in after if f[:1] == " ") > len(after) / 2 if after else False
    return d, spaced


def sniff(head: bytes, name: str, *, encoding: str | None = None, delimiter: str | None = None) -> Dialect:
    if encoding:
        try:
            codec = codecs.lookup(encoding).name
        except LookupError as exc:
            raise IngestError(f"unknown encoding {encoding!r}; {ENCODING_HINT}", code="ingest_bad_encoding") from exc
        bom = head.startswith(codecs.BOM_UTF8) and codec == "utf-8"
        codec = "utf-8-sig" if bom else codec
    else:
        codec, bom = detect_encoding(head, name)
    text = decode_sample(head, codec, name)
    if delimiter is not None and len(delimiter) != 1:
        raise IngestError(f"--delimiter must be one character, got {delimiter!r}", code="ingest_bad_option")
    d, spaced = detect_dialect(text, name, delimiter)
    return Dialect(encoding=codec, delimiter=d, skipinitialspace=spaced, bom=bom)
