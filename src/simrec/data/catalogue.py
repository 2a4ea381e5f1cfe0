"""Catalogue items in memory, validated before anything is written: Fashion-MNIST splits and new batches
(a folder of 28x28 grayscale PNGs with labels.csv, or a folder with one IDX image/label pair)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from simrec.codec import ImageError, decode_png, encode_png, pixel_sha256
from simrec.data.fashion_mnist import LABEL_NAMES, SPLIT_FILES, locate
from simrec.data.idx import IdxArray, read_idx
from simrec.errors import DataError

ITEM_COLUMNS = ["item_id", "label", "label_name", "image", "sha256", "source"]
BATCH_LABELS_FILE = "labels.csv"
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def items_frame(
    ids: list[str], labels: np.ndarray, pngs: list[bytes], sha256s: list[str], source: str
) -> pd.DataFrame:
    labels = labels.astype(np.int32)
    return pd.DataFrame(
        {
            "item_id": ids,
            "label": labels,
            "label_name": [LABEL_NAMES[label] for label in labels],
            "image": pngs,
            "sha256": sha256s,
            "source": source,
        },
        columns=ITEM_COLUMNS,
    )


def _check_labels(path: Path, labels: np.ndarray) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= len(LABEL_NAMES)))
    if bad.size:
        raise DataError(
            f"{path}: label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
            f"0..{len(LABEL_NAMES) - 1} ({bad.size} such labels)"
        )


def _idx_pair_items(images: IdxArray, labels: IdxArray, id_prefix: str, desc: str) -> pd.DataFrame:
    if images.array.shape[1:] != (28, 28):
        raise DataError(f"{images.path}: images are {images.array.shape[1:]}, expected 28x28")
    if len(images.array) != len(labels.array):
        raise DataError(
            f"{images.path}: {len(images.array)} images but {labels.path} has {len(labels.array)} labels"
        )
    _check_labels(labels.path, labels.array)
    pngs, sha256s = [], []
    for pixels in tqdm(images.array, desc=desc, unit="img", mininterval=2.0):
        pngs.append(encode_png(pixels))
        sha256s.append(pixel_sha256(pixels))
    ids = [f"{id_prefix}-{i:06d}" for i in range(len(pngs))]
    return items_frame(ids, labels.array, pngs, sha256s, str(images.path))


def load_fashion_mnist(
    source: str, checksums: dict[str, str] | None, download_dir: Path
) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, str]]]:
    """Items per split (train, test) and, per file, its origin and content SHA-256."""
    arrays: dict[str, IdxArray] = {}
    for split_files in SPLIT_FILES.values():
        for name, ndim in zip(split_files, (3, 1), strict=True):
            arrays[name] = read_idx(locate(source, name, download_dir), ndim)
            if checksums is not None:
                expected = checksums.get(name)
                if expected is None:
                    raise DataError(f"no expected checksum for {name} in the checksums given")
                if arrays[name].sha256 != expected:
                    raise DataError(
                        f"{arrays[name].path}: content SHA-256 {arrays[name].sha256} does not match "
                        f"the expected {expected}"
                    )
    splits = {
        split: _idx_pair_items(arrays[images], arrays[labels], split, f"encode {split}")
        for split, (images, labels) in SPLIT_FILES.items()
    }
    sources = {name: {"path": str(a.path), "sha256": a.sha256} for name, a in arrays.items()}
    return splits, sources


def load_batch(folder: Path) -> pd.DataFrame:
    """A new batch of catalogue items; ids are '<folder name>-<file stem or index>'."""
    if not folder.is_dir():
        raise DataError(f"{folder}: batch folder not found")
    prefix = _SLUG.sub("-", folder.name).strip("-") or "batch"
    if (folder / BATCH_LABELS_FILE).exists():
        return _png_batch(folder, prefix)
    image_files = sorted(folder.glob("*idx3-ubyte*"))
    label_files = sorted(folder.glob("*idx1-ubyte*"))
    if len(image_files) == 1 and len(label_files) == 1:
        images, labels = read_idx(image_files[0], 3), read_idx(label_files[0], 1)
        return _idx_pair_items(images, labels, prefix, f"encode {prefix}")
    raise DataError(
        f"{folder}: a batch needs {BATCH_LABELS_FILE} with PNG files, or exactly one "
        f"*idx3-ubyte[.gz] and one *idx1-ubyte[.gz] file"
    )


def _png_batch(folder: Path, prefix: str) -> pd.DataFrame:
    csv_path = folder / BATCH_LABELS_FILE
    try:
        table = pd.read_csv(csv_path, dtype={"filename": str})
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{csv_path}: unreadable CSV ({exc})") from exc
    if list(table.columns) != ["filename", "label"]:
        raise DataError(f"{csv_path}: columns must be exactly filename,label; found {list(table.columns)}")
    labels = pd.to_numeric(table["label"], errors="coerce")
    if labels.isna().any() or (labels != labels.round()).any():
        row = int(np.flatnonzero(labels.isna() | (labels != labels.round()))[0])
        raise DataError(f"{csv_path}: row {row + 2}: label {table['label'][row]!r} is not an integer")
    if table["filename"].duplicated().any():
        raise DataError(
            f"{csv_path}: duplicate filename {table['filename'][table['filename'].duplicated()].iloc[0]}"
        )
    labels = labels.to_numpy(dtype=np.int64)
    _check_labels(csv_path, labels)
    pngs, sha256s, ids = [], [], []
    for name in tqdm(table["filename"], desc=f"read {prefix}", unit="img", mininterval=2.0):
        path = folder / name
        try:
            data = path.read_bytes()
            pixels = decode_png(data)
        except FileNotFoundError as exc:
            raise DataError(f"{path}: listed in {BATCH_LABELS_FILE} but not found") from exc
        except ImageError as exc:
            raise DataError(f"{path}: {exc}") from exc
        pngs.append(encode_png(pixels))  # re-encoded so every stored PNG is written the same way
        sha256s.append(pixel_sha256(pixels))
        ids.append(f"{prefix}-{Path(name).stem}")
    return items_frame(ids, labels, pngs, sha256s, str(folder))
