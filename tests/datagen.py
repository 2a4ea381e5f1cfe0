"""Small Fashion-MNIST-shaped IDX files for tests: standard library only, so both environments can use it.

Each class has its own pattern (a bar at a class-specific position and orientation) plus noise, so a
model can learn the classes and nearest neighbours find them."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

SPLIT_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def class_image(label: int, rng: random.Random) -> bytes:
    pixels = bytearray(rng.randrange(0, 60) for _ in range(784))
    offset = 3 + 2 * label + rng.randrange(-1, 2)
    for i in range(4, 24):
        for width in range(2):
            row, col = (offset + width, i) if label % 2 == 0 else (i, offset + width)
            pixels[row * 28 + col] = rng.randrange(180, 256)
    return bytes(pixels)


def idx_bytes(kind: str, payload: bytes, count: int) -> bytes:
    if kind == "images":
        header = (0x803).to_bytes(4, "big") + count.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    else:
        header = (0x801).to_bytes(4, "big") + count.to_bytes(4, "big")
    return header + payload


def write_split(folder: Path, split: str, count: int, seed: int) -> tuple[list[bytes], list[int]]:
    rng = random.Random(seed)
    labels = [i % 10 for i in range(count)]
    rng.shuffle(labels)
    images = [class_image(label, rng) for label in labels]
    image_name, label_name = SPLIT_NAMES[split]
    (folder / f"{image_name}.gz").write_bytes(gzip.compress(idx_bytes("images", b"".join(images), count)))
    (folder / f"{label_name}.gz").write_bytes(gzip.compress(idx_bytes("labels", bytes(labels), count)))
    return images, labels


def write_dataset(folder: Path, train: int = 200, test: int = 50, seed: int = 0) -> Path:
    """Four gzip IDX files in `folder`, plus checksums.json of their decompressed content."""
    folder.mkdir(parents=True, exist_ok=True)
    write_split(folder, "train", train, seed)
    write_split(folder, "test", test, seed + 1)
    checksums = {
        name: hashlib.sha256(gzip.decompress((folder / f"{name}.gz").read_bytes())).hexdigest()
        for names in SPLIT_NAMES.values()
        for name in names
    }
    (folder / "checksums.json").write_text(json.dumps(checksums, indent=2))
    return folder
