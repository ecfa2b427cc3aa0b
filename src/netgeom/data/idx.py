"""The IDX format of MNIST and Fashion-MNIST (LeCun's `*-idx3-ubyte` / `*-idx1-ubyte` files).

A file is two zero bytes, a type byte (0x08: unsigned bytes), the number of dimensions, one
big-endian uint32 per dimension, then the data. The reader checks every one of these, and that
the data is exactly as long as the header says, so a truncated, padded or foreign file is refused
with one line naming it instead of being reshaped into garbage. `.gz` files are read through gzip.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from pathlib import Path

import numpy as np

from netgeom.errors import NetgeomError

UNSIGNED_BYTE = 0x08
_MAX_DIMS = 4  # images are 3-D, labels 1-D; anything else is not MNIST-like


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file of unsigned bytes (plain or gzip-compressed)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise NetgeomError(str(path), "does not exist") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise NetgeomError(str(path), f"cannot be read ({exc})") from None
    return parse_idx(raw, path)


def parse_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise NetgeomError(str(path), "is not an IDX file (the magic number must start with two zero bytes)")
    kind, ndim = raw[2], raw[3]
    if kind != UNSIGNED_BYTE:
        raise NetgeomError(str(path), f"holds IDX type 0x{kind:02x}; only unsigned bytes (0x08) are MNIST-like")
    if not 1 <= ndim <= _MAX_DIMS:
        raise NetgeomError(str(path), f"declares {ndim} dimensions; expected 1 (labels) to {_MAX_DIMS}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise NetgeomError(str(path), "is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(shape)  # Python ints: four uint32 dimensions overflow int64
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise NetgeomError(str(path), f"is {state}: {len(raw)} bytes, the header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write unsigned bytes as an IDX file (tests and fixtures use the real format)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UNSIGNED_BYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    Path(path).write_bytes(header + array.tobytes())


def read_images_and_labels(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, H, W) float32 images in [0, 1] and int64 labels, checked to pair up."""
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3:
        raise NetgeomError(str(images), f"holds an array of shape {x.shape}; images are (N, H, W)")
    if y.ndim != 1:
        raise NetgeomError(str(labels), f"holds an array of shape {y.shape}; labels are (N,)")
    if len(x) != len(y):
        raise NetgeomError(str(labels), f"has {len(y)} labels but {images.name} has {len(x)} images")
    return x[:, None].astype(np.float32) / 255.0, y.astype(np.int64)


def md5_of(path: Path, decompress: bool = False) -> str:
    """The md5 of a file's bytes (of its decompressed bytes for a .gz when asked)."""
    digest = hashlib.md5()
    opener = gzip.open if decompress else open
    with opener(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
