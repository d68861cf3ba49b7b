"""A reader for IDX files, the format of MNIST and Fashion-MNIST, gzipped or not.

IDX layout: two zero bytes, a type code, the number of dimensions ``d``, then ``d``
big-endian uint32 sizes, then the data, row-major, big-endian. The header is checked
before anything is allocated: the type code must be known, ``d`` small, the data it
claims no larger than ``max_bytes``, and the file must hold exactly that much data
after the header (for gzip files this is checked while decompressing, in chunks, so a
lying header or a decompression bomb never makes fastgrad allocate what it claims).
"""

import gzip
import io
import os
import struct
import zlib

import numpy as np

# IDX type code -> numpy dtype (big-endian on disk)
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_DIMS = 8
DEFAULT_MAX_BYTES = 1 << 31  # 2 GiB: the full MNIST training images are 47 MB
_CHUNK = 1 << 20


class IDXError(ValueError):
    """A file that is not a valid IDX file, or is inconsistent with its own header."""


def _gzip_file(path):
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def read_idx(path, max_bytes=DEFAULT_MAX_BYTES):
    """The array stored in the IDX file at ``path`` (``.gz`` or plain, detected from the
    content), in native byte order. Raises IDXError for malformed or inconsistent files."""
    path = os.fspath(path)
    try:
        if _gzip_file(path):
            with gzip.open(path, "rb") as f:
                return _read_stream(f, path, max_bytes, None)
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            return _read_stream(f, path, max_bytes, size)
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise IDXError(f"{path}: cannot read IDX data: {exc}") from None


def _read_exact(f, n):
    data = f.read(n)
    return data if data is not None else b""


def _read_stream(f, path, max_bytes, file_size):
    """Parse one IDX stream. ``file_size`` is known for plain files, None for gzip."""
    head = _read_exact(f, 4)
    if len(head) < 4:
        raise IDXError(f"{path}: too short for an IDX header ({len(head)} bytes)")
    if head[0] != 0 or head[1] != 0:
        raise IDXError(f"{path}: not an IDX file (magic starts with {head[:2].hex()}, expected 0000)")
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        raise IDXError(
            f"{path}: unknown IDX type code 0x{code:02x} (known: " + ", ".join(f"0x{c:02x}" for c in IDX_DTYPES) + ")"
        )
    if not 1 <= ndim <= MAX_DIMS:
        raise IDXError(f"{path}: header claims {ndim} dimensions; expected 1 to {MAX_DIMS}")
    raw_dims = _read_exact(f, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise IDXError(
            f"{path}: header cut short: {ndim} dimension sizes announced, file ends after {len(raw_dims) // 4}"
        )
    shape = struct.unpack(f">{ndim}I", raw_dims)
    dtype = IDX_DTYPES[code]
    claimed = dtype.itemsize
    for n in shape:  # Python ints: no overflow however absurd the sizes are
        claimed *= n
    if claimed > max_bytes:
        raise IDXError(
            f"{path}: header claims shape {shape} of {dtype.name}, {claimed:,} bytes, "
            f"more than the limit of {max_bytes:,} bytes (pass max_bytes= to raise it)"
        )
    header_bytes = 4 + 4 * ndim
    if file_size is not None and file_size - header_bytes != claimed:
        raise IDXError(
            f"{path}: header claims shape {shape} ({claimed:,} bytes of data) but the "
            f"file holds {file_size - header_bytes:,} bytes after the header"
        )
    # Read at most claimed + 1 bytes in chunks: memory follows what is really there.
    data = bytearray()
    while len(data) <= claimed:
        chunk = _read_exact(f, min(_CHUNK, claimed + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) != claimed:
        what = "more than" if len(data) > claimed else f"only {len(data):,} bytes, not"
        raise IDXError(
            f"{path}: header claims shape {shape} ({claimed:,} bytes of data) but the "
            f"file holds {what} that after the header"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape)  # writable: it views the bytearray
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def write_idx(path, array):
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in .gz)."""
    array = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise TypeError(f"write_idx: IDX cannot store dtype {array.dtype}")
    if not 1 <= array.ndim <= MAX_DIMS:
        raise ValueError(f"write_idx: IDX stores 1 to {MAX_DIMS} dimensions, got {array.ndim}")
    buf = io.BytesIO()
    buf.write(bytes([0, 0, codes[native], array.ndim]))
    buf.write(struct.pack(f">{array.ndim}I", *array.shape))
    buf.write(np.ascontiguousarray(array, dtype=IDX_DTYPES[codes[native]]).tobytes())
    data = buf.getvalue()
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)
