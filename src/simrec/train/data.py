"""Training input: the exact Delta table version recorded by ingest, split by a stable hash of item_id,
streamed through Petastorm into tf.data (each Horovod rank reads its own shard)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from simrec.data.codec import decode_png
from simrec.data.lake import read_version
from simrec.records import Table

VALIDATION_BUCKETS = 1000
PETASTORM_ROW_GROUP_BYTES = 1 << 20  # small row groups so every rank's shard gets several

# (rank, world size) -> a context manager yielding an endless tf.data.Dataset of
# {"image": PNG bytes [batch], "label": int32 [batch]} batches.
ShardSource = Callable[[int, int], AbstractContextManager[tf.data.Dataset]]


def read_table(spark: SparkSession, table: Table) -> DataFrame:
    """The table's labelled items at the version the lineage names. Unlabelled items (label null) are left
    out: every training and tuning loss here is supervised."""
    return (
        read_version(spark, table)
        .where(F.col("label").isNotNull())
        .select("item_id", F.col("label").cast("int").alias("label"), "image")
    )


def split(frame: DataFrame, validation_fraction: float) -> tuple[DataFrame, DataFrame]:
    """(train, validation) by a stable hash of item_id: an item stays on its side as the table grows."""
    bucket = F.pmod(F.xxhash64("item_id"), F.lit(VALIDATION_BUCKETS))
    cut = round(validation_fraction * VALIDATION_BUCKETS)
    return frame.where(bucket >= cut), frame.where(bucket < cut)


def sample(frame: DataFrame, fraction: float, seed: int) -> DataFrame:
    return frame if fraction >= 1.0 else frame.sample(fraction=fraction, seed=seed)


@dataclass(frozen=True)
class Arrays:
    """Decoded images and labels held in memory (validation sets, tuning trials)."""

    pngs: np.ndarray  # object array of PNG bytes
    labels: np.ndarray  # int32

    @classmethod
    def collect(cls, frame: DataFrame) -> Arrays:
        rows: pd.DataFrame = frame.orderBy("item_id").select("image", "label").toPandas()
        return cls(rows["image"].to_numpy(dtype=object), rows["label"].to_numpy(dtype=np.int32))

    def pixels(self) -> np.ndarray:
        return np.stack([decode_png(png) for png in self.pngs])[..., None]

    def __len__(self) -> int:
        return len(self.labels)


def petastorm_source(frame: DataFrame, shards: int, batch_size: int, seed: int) -> tuple[ShardSource, Any]:
    """A shard source over the frame materialised by Petastorm's Spark converter, and the converter
    (call .delete() when training is done). The converter's cache folder is the Spark conf
    petastorm.spark.converter.parentCacheDirUrl."""
    from petastorm.spark import make_spark_converter

    converter = make_spark_converter(
        frame.repartition(shards), parquet_row_group_size_bytes=PETASTORM_ROW_GROUP_BYTES
    )

    @contextmanager
    def open_shard(rank: int, size: int) -> Iterator[tf.data.Dataset]:
        with converter.make_tf_dataset(
            batch_size=batch_size,
            num_epochs=None,
            workers_count=2,
            shuffling_queue_capacity=4 * batch_size,
            cur_shard=rank,
            shard_count=size,
            seed=seed + rank,
            shuffle_row_groups=True,
        ) as dataset:
            yield dataset.map(_as_dict)

    return open_shard, converter


def _as_dict(batch: Any) -> dict[str, tf.Tensor]:
    """Petastorm yields namedtuples; the training input takes the same dict as memory_source's."""
    return {"image": batch.image, "label": batch.label}


def memory_source(arrays: Arrays, batch_size: int, seed: int) -> ShardSource:
    """A shard source over in-memory arrays (single-process tuning trials, tests)."""

    @contextmanager
    def open_shard(rank: int, size: int) -> Iterator[tf.data.Dataset]:
        data = {"image": arrays.pngs.astype(bytes), "label": arrays.labels}
        yield (
            tf.data.Dataset.from_tensor_slices(data)
            .shard(size, rank)
            .repeat()
            .shuffle(min(len(arrays), 8192), seed=seed + rank)
            .batch(batch_size, drop_remainder=True)
        )

    return open_shard


def decode_batch(pngs: tf.Tensor) -> tf.Tensor:
    images = tf.map_fn(
        lambda png: tf.io.decode_png(png, channels=1),
        pngs,
        fn_output_signature=tf.TensorSpec((None, None, 1), tf.uint8),
    )
    return tf.cast(tf.ensure_shape(images, (None, 28, 28, 1)), tf.float32)


def training_batches(dataset: tf.data.Dataset, augment: bool, seed: int) -> tf.data.Dataset:
    """(images float32 0-255 [b,28,28,1], labels int32 [b]) with random horizontal flips and up to
    2-pixel shifts when augment is on."""
    augmentation = tf.keras.Sequential(
        [
            tf.keras.layers.RandomFlip("horizontal", seed=seed),
            tf.keras.layers.RandomTranslation(
                2 / 28, 2 / 28, fill_mode="constant", interpolation="nearest", seed=seed
            ),
        ]
    )

    def prepare(batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        images = decode_batch(batch["image"])
        if augment:
            images = augmentation(images, training=True)
        return images, tf.cast(batch["label"], tf.int32)

    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
