"""Token dumps read safely: a Kaldi `.scp` maps ids to records in `.ark` files.

`kaldiio.load_scp` would run an scp entry (or an scp path) ending in `|` as a shell command and
unpickle a `PKL` record. Token dumps and manifests come from other people too (a shared corpus, a
downloaded experiment), so the data loader reads them here instead, accepting only what
`opuslm.dump` and Kaldi write: `id ark_path:byte_offset` lines (or `id path`, offset 0) whose
records are NPY arrays of plain dtypes (no object arrays, so nothing is unpickled) or Kaldi
binary matrices / vectors. Every error is an `ArkError` naming the scp file, its line and the id.
"""

from __future__ import annotations

import io
import math
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
from kaldiio.matio import read_kaldi

from opuslm.data.datadir import DataDirError, read_table

NPY_FLAG = b"NPY"
KALDI_BINARY_FLAG = b"\0B"
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class ArkError(ValueError):
    """An scp entry or ark record that cannot be read; the message names scp:line and the id."""


class ScpEntry(NamedTuple):
    line: int
    ark: str
    offset: int


def parse_scp(path: str | os.PathLike) -> dict[str, ScpEntry]:
    """{id: (line, ark path, byte offset)} of an scp file, in file order.

    Raises ArkError for lines read_table refuses (not UTF-8, duplicate id, ...), entries without
    a location, and shell pipes, which are never run.
    """
    try:
        table = read_table(path)
    except DataDirError as e:
        raise ArkError(str(e)) from None
    except OSError as e:
        raise ArkError(f"{path}: cannot read the scp file ({e.strerror or e})") from None
    entries = {}
    for line, (key, value) in enumerate(table.items(), start=1):
        where = f"{path}:{line}: {key!r}"
        if not value:
            raise ArkError(f"{where}: no ark location")
        if value.endswith("|") or value.startswith("|"):
            raise ArkError(
                f"{where}: {value!r} is a shell pipe; token dumps are only read from files"
            )
        ark, _, offset = value.rpartition(":")
        if not (ark and offset.isdigit()):
            ark, offset = value, "0"
        entries[key] = ScpEntry(line, ark, int(offset))
    return entries


def _read_npy(f: io.BufferedReader, where: str) -> np.ndarray:
    """An NPY record as kaldiio writes it: `NPY`, a length header, then `np.save` bytes.

    The header is checked against the payload before any array is allocated, so a corrupt
    shape cannot ask for terabytes; object arrays (pickles) are refused.
    """
    f.read(len(NPY_FLAG))
    (size_bytes,) = struct.unpack("<B", f.read(1) or b"\0")
    size = int.from_bytes(f.read(size_bytes), "little")
    payload = f.read(size)
    if size == 0 or len(payload) < size:
        raise ArkError(f"{where}: truncated record ({len(payload)} of {size} bytes)")
    buffer = io.BytesIO(payload)
    try:
        version = np.lib.format.read_magic(buffer)
        read_header = _NPY_HEADER_READERS.get(version)
        if read_header is None:
            raise ValueError(f"NPY format version {version}")
        shape, fortran_order, dtype = read_header(buffer)
    except (ValueError, SyntaxError, TypeError) as e:
        raise ArkError(f"{where}: not a plain NPY array ({e})") from None
    if dtype.hasobject:
        raise ArkError(f"{where}: not a plain NPY array (object dtype; it would need unpickling)")
    count = math.prod(shape)
    data = payload[buffer.tell() :]
    if count * dtype.itemsize != len(data):
        raise ArkError(
            f"{where}: NPY header says {shape} {dtype} ({count * dtype.itemsize} bytes) but the "
            f"record holds {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, count=count).copy()
    return array.reshape(shape, order="F" if fortran_order else "C")


def read_record(ark: str, offset: int, where: str) -> np.ndarray:
    """The array stored at byte `offset` of `ark`; `where` prefixes error messages."""
    try:
        with open(ark, "rb") as f:
            return _read_at(f, ark, offset, where)
    except OSError as e:
        raise ArkError(f"{where}: cannot read ark {ark}: {e.strerror or e}") from None


def _read_at(f: io.BufferedReader, ark: str, offset: int, where: str) -> np.ndarray:
    size = os.fstat(f.fileno()).st_size
    if offset >= size:
        raise ArkError(f"{where}: offset {offset} is past the end of {ark} ({size} bytes)")
    f.seek(offset)
    flag = f.read(len(NPY_FLAG))
    f.seek(offset)
    if flag == NPY_FLAG:
        return _read_npy(f, where)
    if flag.startswith(KALDI_BINARY_FLAG):
        try:
            return np.asarray(read_kaldi(f))
        except Exception as e:  # kaldiio reports a broken record with bare asserts
            raise ArkError(f"{where}: broken Kaldi record in {ark} ({e!r})") from None
    raise ArkError(
        f"{where}: no NPY or Kaldi binary record at byte {offset} of {ark} (found {flag!r}); "
        f"pickled records are refused, and a wrong offset means the scp and ark do not match"
    )


class ScpTable(Mapping[str, np.ndarray]):
    """A lazy {id: array} view of an scp file: each access opens the ark and reads one record."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.entries = parse_scp(self.path)

    def __getitem__(self, key: str) -> np.ndarray:
        entry = self.entries[key]
        return read_record(entry.ark, entry.offset, f"{self.path}:{entry.line}: {key!r}")

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)
