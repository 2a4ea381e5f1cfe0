"""Fashion-MNIST as released by Zalando Research: file names, checksums, class names, and fetching the
files from a local folder or the official download location."""

from __future__ import annotations

import json
from pathlib import Path

import requests
from tqdm import tqdm

from simrec.infra.errors import DataError
from simrec.infra.files import atomic_write

OFFICIAL_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of each file's decompressed content: gzip bytes differ between mirrors, the content does not.
# Computed from Debian's dataset-fashion-mnist files and matching the release's published archives.
OFFICIAL_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

LABEL_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
UNLABELLED = -1  # in-memory stand-in for an unlabelled item's null label where arrays must be integers


def label_name(label: int) -> str:
    return "unlabelled" if label == UNLABELLED else LABEL_NAMES[label]


def parse_classes(text: str) -> tuple[int, ...]:
    """A comma-separated list of class labels ('2,4,6'; '' for none), sorted and checked."""
    try:
        labels = {int(part) for part in text.split(",") if part.strip()}
    except ValueError as exc:
        raise DataError(f"classes must be comma-separated integers like 2,4,6, got {text!r}") from exc
    invalid = sorted(label for label in labels if not 0 <= label < len(LABEL_NAMES))
    if invalid:
        raise DataError(f"class {invalid[0]} does not exist; classes are 0..{len(LABEL_NAMES) - 1}")
    if len(labels) >= len(LABEL_NAMES) - 1:
        raise DataError(f"excluding {len(labels)} of {len(LABEL_NAMES)} classes leaves too few to learn from")
    return tuple(sorted(labels))


def format_classes(labels: tuple[int, ...]) -> str:
    return ",".join(map(str, labels))


def expected_checksums(spec: str) -> dict[str, str] | None:
    """'official' -> the release's checksums; 'none' -> no check; otherwise a JSON file name -> sha256."""
    if spec == "official":
        return dict(OFFICIAL_SHA256)
    if spec == "none":
        return None
    path = Path(spec)
    try:
        checksums = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read checksums ({exc})") from exc
    if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
        raise DataError(f"{path}: checksums must be a JSON object of file name -> sha256 hex")
    return checksums


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def locate(source: str, name: str, download_dir: Path) -> Path:
    """The local path of IDX file `name` (without .gz) from a folder, or downloaded from a URL."""
    if not is_url(source):
        folder = Path(source)
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
        raise DataError(f"{folder / name}.gz: file not found (nor {name} uncompressed)")
    return download(source.rstrip("/") + f"/{name}.gz", download_dir / f"{name}.gz")


def download(url: str, target: Path, timeout_s: float = 60.0) -> Path:
    """Downloads url to target atomically (a partial download never takes the target's name)."""
    try:
        with requests.get(url, stream=True, timeout=timeout_s) as response:
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0)) or None
            with (
                atomic_write(target) as out,
                tqdm(
                    total=total, unit="B", unit_scale=True, desc=f"download {target.name}", leave=False
                ) as bar,
            ):
                for chunk in response.iter_content(chunk_size=1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except requests.RequestException as exc:
        raise DataError(f"{url}: download failed ({exc})") from exc
    return target
