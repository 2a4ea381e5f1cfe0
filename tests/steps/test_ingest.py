import contextlib
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from datagen import SPLIT_NAMES, write_dataset
from deltalake import DeltaTable
from PIL import Image
from pyspark.sql.types import StructField, StructType

from simrec.data.codec import decode_png
from simrec.data.fashion_mnist import LABEL_NAMES
from simrec.data.idx import read_idx, write_idx
from simrec.data.lake import INPUTS_KEY, ITEM_SCHEMA, current_version, table_uri
from simrec.infra.crash_points import ENV as CRASH_AT
from simrec.infra.errors import DataError
from simrec.steps.ingest import ingest, main


def _read_delta(uri: str):
    """The table through delta-rs, an independent reader, sorted by item_id."""
    return DeltaTable(uri).to_pandas().sort_values("item_id").reset_index(drop=True)


def _versions(spark, lake: Path) -> dict[str, int | None]:
    return {t: current_version(spark, table_uri(str(lake), t)) for t in ("train", "test")}


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory) -> tuple[Path, Path]:
    """A lake with the small dataset ingested once; tests that fail an ingest must leave it as it is."""
    root = tmp_path_factory.mktemp("lake")
    source = write_dataset(root / "src")
    ingest(spark, str(source), str(root / "lake"), checksums=str(source / "checksums.json"))
    return source, root / "lake"


def test_tables_hold_the_source_exactly(lake) -> None:
    source, lake_dir = lake
    for split, (image_file, label_file) in SPLIT_NAMES.items():
        frame = _read_delta(table_uri(str(lake_dir), split))
        images = read_idx(source / f"{image_file}.gz", 3).array
        labels = read_idx(source / f"{label_file}.gz", 1).array
        assert list(frame["item_id"]) == [f"{split}-{i:06d}" for i in range(len(labels))]
        np.testing.assert_array_equal(frame["label"].to_numpy(), labels)
        assert list(frame["label_name"]) == [LABEL_NAMES[label] for label in labels]
        assert isinstance(frame["image"][0], bytes)  # binary, never a list of uint8
        decoded = np.stack([decode_png(png) for png in frame["image"]])
        np.testing.assert_array_equal(decoded, images)
        assert frame["source"].str.endswith(f"{image_file}.gz").all()
        assert frame["ingested_at"].notna().all()


def _no_spark():
    raise AssertionError("an unchanged ingest asked for a Spark session")


def _recorded_inputs(lake_dir: Path, table: str) -> list[str]:
    return json.loads(DeltaTable(table_uri(str(lake_dir), table)).history(1)[0]["userMetadata"])[INPUTS_KEY]


def test_rerun_adds_no_rows_and_no_version(spark, lake, tmp_path) -> None:
    source, lake_dir = lake
    before = _versions(spark, lake_dir)
    for _ in range(2):  # recognised from the commits' recorded inputs: no Spark session is started
        lineage = ingest(_no_spark, str(source), str(lake_dir), checksums=str(source / "checksums.json"))
        assert {t: s.version for t, s in lineage.tables.items()} == before
        assert {t: s.rows for t, s in lineage.tables.items()} == {"train": 200, "test": 50}
    assert _versions(spark, lake_dir) == before
    assert len(_recorded_inputs(lake_dir, "train")) == len(_recorded_inputs(lake_dir, "test")) == 1


def test_after_a_commit_by_someone_else_items_are_compared_again(spark, tmp_path) -> None:
    source = write_dataset(tmp_path / "src", train=30, test=10)
    lake_dir = tmp_path / "lake"
    first = ingest(spark, str(source), str(lake_dir), checksums="none")
    train = table_uri(str(lake_dir), "train")
    spark.sql(f"DELETE FROM delta.`{train}` WHERE item_id = 'train-000007'")  # records no inputs
    again = ingest(spark, str(source), str(lake_dir), checksums="none")
    assert (again.tables.train.version, again.tables.train.rows) == (2, 30)
    assert again.tables.test == first.tables.test
    assert "train-000007" in set(_read_delta(train)["item_id"])
    assert ingest(_no_spark, str(source), str(lake_dir), checksums="none").tables == again.tables


def test_cli_writes_lineage(spark, lake, tmp_path) -> None:
    source, lake_dir = lake
    out = tmp_path / "lineage.json"
    main(
        [
            "--source",
            str(source),
            "--lake-uri",
            str(lake_dir),
            "--checksums",
            str(source / "checksums.json"),
            "--lineage-out",
            str(out),
        ]
    )
    lineage = json.loads(out.read_text())
    assert lineage["tables"]["test"]["rows"] == 50
    assert lineage["tables"]["test"]["uri"] == table_uri(str(lake_dir), "test")
    assert set(lineage["sources"]) == {n for names in SPLIT_NAMES.values() for n in names}


def _png_batch(folder: Path, count: int, label: int = 3) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, size=(28, 28), dtype=np.uint8) for _ in range(count)]
    for i, pixels in enumerate(images):
        Image.fromarray(pixels, mode="L").save(folder / f"item{i}.png")
    rows = "\n".join(f"item{i}.png,{label}" for i in range(count))
    (folder / "labels.csv").write_text(f"filename,label\n{rows}\n")
    return images


def test_png_batch_appends_new_ids_once(spark, tmp_path) -> None:
    source = write_dataset(tmp_path / "src", train=30, test=10)
    lake_dir = tmp_path / "lake"
    checksums = str(source / "checksums.json")
    ingest(spark, str(source), str(lake_dir), checksums=checksums)
    images = _png_batch(tmp_path / "spring-2026", 4)
    first = ingest(spark, str(source), str(lake_dir), checksums=checksums, batch=tmp_path / "spring-2026")
    assert (first.tables.train.version, first.tables.train.rows) == (1, 34)
    again = ingest(_no_spark, str(source), str(lake_dir), checksums=checksums, batch=tmp_path / "spring-2026")
    assert again.tables == first.tables
    # The batch's commit records the earlier inputs too: the base dataset alone is unchanged as well.
    assert ingest(_no_spark, str(source), str(lake_dir), checksums=checksums).tables == first.tables
    frame = _read_delta(table_uri(str(lake_dir), "train"))
    batch = frame[frame["item_id"].str.startswith("spring-2026-")]
    assert list(batch["item_id"]) == [f"spring-2026-item{i}" for i in range(4)]
    assert (batch["label_name"] == "Dress").all()
    for pixels, png in zip(images, batch["image"], strict=True):
        np.testing.assert_array_equal(decode_png(png), pixels)


def test_idx_batch_goes_to_the_table_asked_for(spark, tmp_path) -> None:
    source = write_dataset(tmp_path / "src", train=30, test=10)
    lake_dir = tmp_path / "lake"
    batch = tmp_path / "extra"
    batch.mkdir()
    write_idx(batch / "extra-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8))
    write_idx(batch / "extra-labels-idx1-ubyte.gz", np.array([1, 2, 9], np.uint8))
    lineage = ingest(spark, str(source), str(lake_dir), checksums="none", batch=batch, batch_table="test")
    assert lineage.tables.test.rows == 13
    frame = _read_delta(table_uri(str(lake_dir), "test"))
    assert list(frame[frame["item_id"].str.startswith("extra-")]["label"]) == [1, 2, 9]


def test_unlabelled_batch_items_are_stored_with_null_labels(spark, tmp_path) -> None:
    source = write_dataset(tmp_path / "src", train=30, test=10)
    lake_dir = tmp_path / "lake"
    ingest(spark, str(source), str(lake_dir), checksums="none")
    images = _png_batch(tmp_path / "mixed", 3)  # an empty label marks an unlabelled item
    (tmp_path / "mixed" / "labels.csv").write_text("filename,label\nitem0.png,3\nitem1.png,\nitem2.png, \n")
    lineage = ingest(spark, str(source), str(lake_dir), checksums="none", batch=tmp_path / "mixed")
    assert lineage.sources["batch:mixed"] == {
        "path": str(tmp_path / "mixed"),
        "items": "3",
        "unlabelled": "2",
    }
    unlabelled = tmp_path / "no-labels"  # an IDX images file without its labels file: all unlabelled
    unlabelled.mkdir()
    write_idx(unlabelled / "new-images-idx3-ubyte.gz", np.full((2, 28, 28), 9, np.uint8))
    lineage = ingest(spark, str(source), str(lake_dir), checksums="none", batch=unlabelled)
    assert lineage.tables.train.rows == 35
    assert lineage.sources["batch:no-labels"]["unlabelled"] == "2"
    frame = _read_delta(table_uri(str(lake_dir), "train")).set_index("item_id")
    assert frame.loc["mixed-item0", ["label", "label_name"]].tolist() == [3, "Dress"]
    for item in ("mixed-item1", "mixed-item2", "no-labels-000000", "no-labels-000001"):
        assert frame.loc[item, ["label", "label_name"]].isna().all()
    assert frame["label"].notna().sum() == 31
    np.testing.assert_array_equal(decode_png(frame.loc["mixed-item1", "image"]), images[1])
    np.testing.assert_array_equal(decode_png(frame.loc["no-labels-000001", "image"]), np.full((28, 28), 9))


def test_unlabelled_items_join_a_table_made_when_labels_were_declared_required(spark, tmp_path) -> None:
    source = write_dataset(tmp_path / "src", train=30, test=10)
    lake_dir = tmp_path / "lake"
    train = table_uri(str(lake_dir), "train")
    required = StructType(  # the schema of lakes written before unlabelled items were accepted
        [StructField(f.name, f.dataType, f.name not in ("label", "label_name")) for f in ITEM_SCHEMA]
    )
    spark.createDataFrame([], required).write.format("delta").save(train)
    batch = tmp_path / "unlabelled"
    batch.mkdir()
    write_idx(batch / "x-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    lineage = ingest(spark, str(source), str(lake_dir), checksums="none", batch=batch)
    assert (lineage.tables.train.version, lineage.tables.train.rows) == (1, 32)
    assert _read_delta(train)["label"].isna().sum() == 2
    assert ingest(_no_spark, str(source), str(lake_dir), checksums="none", batch=batch) == lineage


TRUNCATE = b"truncate"


def _corrupt(source: Path, tmp_path: Path, name: str, content: bytes | None) -> Path:
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    target = broken / f"{name}.gz"
    if content is None:
        target.unlink()
    elif content == TRUNCATE:  # a download cut short
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    else:
        target.write_bytes(content)
    return broken


def _labels_idx(values: bytes) -> bytes:
    return gzip.compress((0x801).to_bytes(4, "big") + len(values).to_bytes(4, "big") + values)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("train-images-idx3-ubyte", None, r"train-images-idx3-ubyte.gz: file not found"),
        ("train-images-idx3-ubyte", TRUNCATE, r"train-images-idx3-ubyte.gz: cannot decompress"),
        (
            "train-images-idx3-ubyte",
            b"\x1f\x8b\x08\x00garbage",
            r"train-images-idx3-ubyte.gz: cannot decompress",
        ),
        (
            "t10k-labels-idx1-ubyte",
            gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 54),
            r"t10k-labels-idx1-ubyte.gz: wrong magic number 0x00000803",
        ),
        (
            "t10k-labels-idx1-ubyte",
            _labels_idx(bytes(49)),
            r"t10k-images-idx3-ubyte.gz: 50 images but .*t10k-labels-idx1-ubyte.gz has 49 labels",
        ),
        (
            "train-labels-idx1-ubyte",
            _labels_idx(bytes([1] * 199 + [10])),
            r"train-labels-idx1-ubyte.gz: label 10 at index 199 is out of range 0..9",
        ),
    ],
)
def test_bad_source_changes_nothing(spark, lake, tmp_path, name, content, message) -> None:
    source, lake_dir = lake
    before = _versions(spark, lake_dir)
    broken = _corrupt(source, tmp_path, name, content)
    with pytest.raises(DataError, match=message):
        ingest(spark, str(broken), str(lake_dir), checksums="none")
    assert _versions(spark, lake_dir) == before


def test_checksum_mismatch_is_refused(spark, lake) -> None:
    source, lake_dir = lake
    before = _versions(spark, lake_dir)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: content SHA-256 \w+ does not match"):
        ingest(spark, str(source), str(lake_dir), checksums="official")
    assert _versions(spark, lake_dir) == before


def _broken_batch(folder: Path, case: str) -> None:
    _png_batch(folder, 3)
    if case == "size":
        Image.new("L", (28, 30)).save(folder / "item1.png")
    elif case == "mode":
        Image.new("RGB", (28, 28)).save(folder / "item2.png")
    elif case == "csv":
        (folder / "labels.csv").write_bytes(b"\xff\xfe\x00bad\x00")
    elif case == "columns":
        (folder / "labels.csv").write_text("file,class\nitem0.png,1\n")
    elif case == "label":
        (folder / "labels.csv").write_text("filename,label\nitem0.png,1\nitem1.png,shoe\n")
    elif case == "missing":
        (folder / "item0.png").unlink()
    elif case == "range":
        (folder / "labels.csv").write_text("filename,label\nitem0.png,\nitem1.png,10\n")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("size", r"item1.png: PNG is 28x30, expected 28x28"),
        ("mode", r"item2.png: PNG mode is RGB, expected L"),
        ("csv", r"labels.csv: unreadable CSV"),
        ("columns", r"labels.csv: columns must be exactly filename,label"),
        ("label", r"labels.csv: row 3: label 'shoe' is not an integer"),
        ("missing", r"item0.png: listed in labels.csv but not found"),
        ("range", r"labels.csv: row 3: label '10' is out of range 0..9"),
    ],
)
def test_bad_batch_changes_nothing(spark, lake, tmp_path, case, message) -> None:
    source, lake_dir = lake
    before = _versions(spark, lake_dir)
    _broken_batch(tmp_path / "batch", case)
    with pytest.raises(DataError, match=message):
        ingest(spark, str(source), str(lake_dir), checksums="none", batch=tmp_path / "batch")
    assert _versions(spark, lake_dir) == before


def test_changed_pixels_for_a_stored_id_are_refused(spark, lake, tmp_path) -> None:
    _source, lake_dir = lake
    before = _versions(spark, lake_dir)
    other = write_dataset(tmp_path / "other", seed=99)  # same ids, different pixels
    with pytest.raises(DataError, match=r"already stored with different pixels, e.g. train-000000"):
        ingest(spark, str(other), str(lake_dir), checksums="none")
    assert _versions(spark, lake_dir) == before


def test_a_conflict_in_the_test_table_leaves_the_train_table_unchanged(spark, tmp_path) -> None:
    source = write_dataset(tmp_path / "src", train=30, test=10)
    lake_dir = tmp_path / "lake"
    ingest(spark, str(source), str(lake_dir), checksums="none")
    changed = tmp_path / "changed"
    shutil.copytree(source, changed)
    other = write_dataset(tmp_path / "other", train=30, test=10, seed=99)
    for name in SPLIT_NAMES["test"]:  # the same test ids with different pixels
        shutil.copy(other / f"{name}.gz", changed / f"{name}.gz")
    _png_batch(tmp_path / "new-items", 2)  # new train items, which must not be committed alone
    with pytest.raises(DataError, match=r"/test: 10 item\(s\) already stored with different pixels"):
        ingest(spark, str(changed), str(lake_dir), checksums="none", batch=tmp_path / "new-items")
    assert _versions(spark, lake_dir) == {"train": 0, "test": 0}
    assert len(_read_delta(table_uri(str(lake_dir), "train"))) == 30


def _ingest_process(source: Path, lake_dir: Path, lineage: Path, env: dict[str, str]) -> int:
    command = [str(Path(sys.executable).parent / "simrec"), "ingest", "--source", str(source)]
    command += ["--lake-uri", str(lake_dir), "--checksums", "none", "--lineage-out", str(lineage)]
    process = subprocess.Popen(command, env=os.environ | env, start_new_session=True, stderr=subprocess.PIPE)
    _, stderr = process.communicate(timeout=300)
    with contextlib.suppress(ProcessLookupError):  # what the crash left behind, e.g. the Spark JVM
        os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode in (0, -signal.SIGKILL), stderr.decode()[-3000:]
    return process.returncode


def test_a_process_killed_between_the_two_commits_is_completed_by_a_rerun(tmp_path) -> None:
    source = write_dataset(tmp_path / "src", train=30, test=10)
    lake_dir, lineage = tmp_path / "lake", tmp_path / "lineage.json"
    crashed = _ingest_process(source, lake_dir, lineage, {CRASH_AT: "ingest:between-commits"})
    assert crashed == -signal.SIGKILL
    assert not lineage.exists()  # no step downstream can read the half-written lake
    assert DeltaTable(table_uri(str(lake_dir), "train")).version() == 0
    assert not (lake_dir / "test").exists()

    assert _ingest_process(source, lake_dir, lineage, {}) == 0
    tables = json.loads(lineage.read_text())["tables"]
    assert {t: (s["version"], s["rows"]) for t, s in tables.items()} == {"train": (0, 30), "test": (0, 10)}
    for table, count in (("train", 30), ("test", 10)):
        frame = _read_delta(table_uri(str(lake_dir), table))
        assert DeltaTable(table_uri(str(lake_dir), table)).version() == 0
        assert list(frame["item_id"]) == [f"{table}-{i:06d}" for i in range(count)]  # each item once


@pytest.fixture
def http_source(tmp_path):
    folder = write_dataset(tmp_path / "served", train=20, test=10)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", folder
    server.shutdown()


def test_download_from_http_source_verifies_checksums(spark, http_source, tmp_path) -> None:
    url, folder = http_source
    lineage = ingest(spark, url, str(tmp_path / "lake"), checksums=str(folder / "checksums.json"))
    assert lineage.tables.train.rows == 20
    assert lineage.sources["train-images-idx3-ubyte"]["path"].startswith(str(tmp_path / "lake"))
    with pytest.raises(DataError, match=r"404"):
        ingest(spark, url + "missing/", str(tmp_path / "lake2"), checksums="none")


REAL = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(
    not (REAL / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist(spark, tmp_path) -> None:
    lineage = ingest(spark, str(REAL), str(tmp_path / "lake"), checksums="official")
    for split, count in (("train", 60_000), ("test", 10_000)):
        frame = _read_delta(getattr(lineage.tables, split).uri)
        assert len(frame) == count
        assert frame["label"].value_counts().to_dict() == {k: count // 10 for k in range(10)}
        image_file, label_file = SPLIT_NAMES[split]
        np.testing.assert_array_equal(frame["label"].to_numpy(), read_idx(REAL / f"{label_file}.gz", 1).array)
        images = read_idx(REAL / f"{image_file}.gz", 3).array
        decoded = np.stack([decode_png(png) for png in frame["image"]])
        np.testing.assert_array_equal(decoded, images)


def test_downloads_go_to_a_local_folder_whatever_the_lake(tmp_path, monkeypatch) -> None:
    from simrec.steps.ingest import default_download_dir

    assert default_download_dir(str(tmp_path / "lake")) == tmp_path / "lake" / "_downloads"
    assert default_download_dir(f"file://{tmp_path}/lake") == tmp_path / "lake" / "_downloads"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_download_dir("s3a://simrec/lake") == tmp_path / "cache" / "simrec" / "downloads"
    monkeypatch.delenv("XDG_CACHE_HOME")
    remote = default_download_dir("s3a://simrec/lake")
    assert remote.is_absolute() and "s3a:" not in remote.parts
