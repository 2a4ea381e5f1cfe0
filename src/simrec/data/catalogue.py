"""Catalogue items in memory, validated before anything is written: Fashion-MNIST splits and new batches
(a folder of 28x28 grayscale PNGs with labels.csv, or a folder with one IDX image file and optionally its
label file). A batch may hold unlabelled items: an empty label in labels.csv, or an IDX images file
without a labels file."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from simrec.data.codec import ImageError, decode_png, encode_png, pixel_sha256
from simrec.data.fashion_mnist import LABEL_NAMES, SPLIT_FILES, locate
from simrec.data.idx import IdxArray, read_idx
from simrec.infra.errors import DataError

ITEM_COLUMNS = ["item_id", "label", "label_name", "image", "sha256", "source"]
BATCH_LABELS_FILE = "labels.csv"
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Items:
    """Validated catalogue items of one or more inputs, with pixels still raw: PNG encoding (the slow part
    of an ingest) is done by `encoded` for the rows a table actually lacks. An unlabelled item has label
    and label_name <NA>."""

    meta: pd.DataFrame  # item_id, label (Int32, <NA> = unlabelled), label_name, sha256, source
    pixels: np.ndarray  # [n, 28, 28] uint8, row i belongs to meta row i

    def __len__(self) -> int:
        return len(self.meta)

    def digest(self) -> str:
        """SHA-256 of the items' ids, pixel checksums and labels: equal digests, equal items."""
        labels = self.meta["label"].astype("string").fillna("")
        lines = self.meta["item_id"] + "\t" + self.meta["sha256"] + "\t" + labels
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def unlabelled(self) -> int:
        return int(self.meta["label"].isna().sum())

    def encoded(self, rows: np.ndarray | None = None) -> pd.DataFrame:
        """The chosen rows (all by default) as ITEM_COLUMNS, images as PNG bytes."""
        rows = np.arange(len(self)) if rows is None else rows
        pngs = [encode_png(p) for p in tqdm(self.pixels[rows], desc="encode", unit="img", mininterval=2.0)]
        return self.meta.iloc[rows].assign(image=pngs)[ITEM_COLUMNS].reset_index(drop=True)

    @staticmethod
    def concat(parts: list[Items]) -> Items:
        return Items(
            pd.concat([p.meta for p in parts], ignore_index=True), np.concatenate([p.pixels for p in parts])
        )


def make_items(
    ids: list[str], labels: pd.Series | np.ndarray | None, pixels: np.ndarray, source: str
) -> Items:
    """Items from ids, class labels (None, or NaN entries: unlabelled) and [n, 28, 28] uint8 pixels."""
    label_column = pd.array([None] * len(ids) if labels is None else labels, dtype="Int32")
    meta = pd.DataFrame(
        {
            "item_id": ids,
            "label": label_column,
            "label_name": [None if pd.isna(v) else LABEL_NAMES[v] for v in label_column],
            "sha256": [pixel_sha256(p) for p in pixels],
            "source": source,
        }
    )
    return Items(meta, pixels)


def _check_labels(path: Path, labels: np.ndarray) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= len(LABEL_NAMES)))
    if bad.size:
        raise DataError(
            f"{path}: label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
            f"0..{len(LABEL_NAMES) - 1} ({bad.size} such labels)"
        )


def _check_images(images: IdxArray) -> None:
    if images.array.shape[1:] != (28, 28):
        raise DataError(f"{images.path}: images are {images.array.shape[1:]}, expected 28x28")


def _idx_pair_items(images: IdxArray, labels: IdxArray, id_prefix: str) -> Items:
    _check_images(images)
    if len(images.array) != len(labels.array):
        raise DataError(
            f"{images.path}: {len(images.array)} images but {labels.path} has {len(labels.array)} labels"
        )
    _check_labels(labels.path, labels.array)
    return _idx_items(images, labels.array, id_prefix)


def _idx_items(images: IdxArray, labels: np.ndarray | None, id_prefix: str) -> Items:
    ids = [f"{id_prefix}-{i:06d}" for i in range(len(images.array))]
    return make_items(ids, labels, images.array, str(images.path))


def load_fashion_mnist(
    source: str, checksums: dict[str, str] | None, download_dir: Path
) -> tuple[dict[str, Items], dict[str, dict[str, str]]]:
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
        split: _idx_pair_items(arrays[images], arrays[labels], split)
        for split, (images, labels) in SPLIT_FILES.items()
    }
    sources = {name: {"path": str(a.path), "sha256": a.sha256} for name, a in arrays.items()}
    return splits, sources


def load_batch(folder: Path) -> Items:
    """A new batch of catalogue items; ids are '<folder name>-<file stem or index>'."""
    if not folder.is_dir():
        raise DataError(f"{folder}: batch folder not found")
    prefix = _SLUG.sub("-", folder.name).strip("-") or "batch"
    if (folder / BATCH_LABELS_FILE).exists():
        return _png_batch(folder, prefix)
    image_files = sorted(folder.glob("*idx3-ubyte*"))
    label_files = sorted(folder.glob("*idx1-ubyte*"))
    if len(image_files) == 1 and len(label_files) <= 1:
        images = read_idx(image_files[0], 3)
        if not label_files:  # the labels file is absent: every item of the batch is unlabelled
            _check_images(images)
            return _idx_items(images, None, prefix)
        return _idx_pair_items(images, read_idx(label_files[0], 1), prefix)
    raise DataError(
        f"{folder}: a batch needs {BATCH_LABELS_FILE} with PNG files, or exactly one "
        f"*idx3-ubyte[.gz] file and at most one *idx1-ubyte[.gz] file"
    )


def _png_batch(folder: Path, prefix: str) -> Items:
    csv_path = folder / BATCH_LABELS_FILE
    try:
        table = pd.read_csv(csv_path, dtype={"filename": str, "label": str}, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{csv_path}: unreadable CSV ({exc})") from exc
    if list(table.columns) != ["filename", "label"]:
        raise DataError(f"{csv_path}: columns must be exactly filename,label; found {list(table.columns)}")
    # An empty label marks an unlabelled item; anything else must be a class number.
    given = table["label"].str.strip()
    labels = pd.to_numeric(given.mask(given == ""), errors="coerce")
    wrong = (labels.isna() & (given != "")) | (labels.notna() & (labels != labels.round()))
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise DataError(f"{csv_path}: row {row + 2}: label {table['label'][row]!r} is not an integer")
    if table["filename"].duplicated().any():
        raise DataError(
            f"{csv_path}: duplicate filename {table['filename'][table['filename'].duplicated()].iloc[0]}"
        )
    out_of_range = labels.notna() & ~labels.between(0, len(LABEL_NAMES) - 1)
    if out_of_range.any():
        row = int(np.flatnonzero(out_of_range)[0])
        raise DataError(
            f"{csv_path}: row {row + 2}: label {table['label'][row]!r} is out of range "
            f"0..{len(LABEL_NAMES) - 1}"
        )
    pixels, ids = [], []
    for name in tqdm(table["filename"], desc=f"read {prefix}", unit="img", mininterval=2.0):
        path = folder / name
        try:
            pixels.append(decode_png(path.read_bytes()))
        except FileNotFoundError as exc:
            raise DataError(f"{path}: listed in {BATCH_LABELS_FILE} but not found") from exc
        except ImageError as exc:
            raise DataError(f"{path}: {exc}") from exc
        ids.append(f"{prefix}-{Path(name).stem}")
    stacked = np.stack(pixels) if pixels else np.zeros((0, 28, 28), np.uint8)
    return make_items(ids, labels, stacked, str(folder))
