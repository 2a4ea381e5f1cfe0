"""Test recall@1 of a trained embedding model: each test image's nearest train image (cosine) has the
same label, without Spark or the evaluate step, for the training benchmark (benchmarks/train.py); the
pipeline's measurements come from evaluate (benchmarks/evaluation_table.py prints them for runs).

  .envs/steps/bin/python benchmarks/recall.py RUN_FOLDER   (a `simrec run` folder with ingest/ and train/)"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tensorflow as tf
from pyspark.sql import SparkSession

from simrec.data.lineage import read_lineage
from simrec.records import Lineage
from simrec.retrieval.exact import recall_at_k, top_k
from simrec.train.data import Arrays, read_table
from simrec.train.loop import EMBEDDING_MODEL_FILE, embed


def test_recall_at_1(spark: SparkSession, lineage: Lineage, model_dir: Path) -> float:
    model = tf.keras.models.load_model(model_dir / EMBEDDING_MODEL_FILE)
    gallery = Arrays.collect(read_table(spark, lineage.tables.train))
    queries = Arrays.collect(read_table(spark, lineage.tables.test))
    gallery_embeddings = embed(model, gallery.pixels().astype(np.float32))
    query_embeddings = embed(model, queries.pixels().astype(np.float32))
    return recall_at_k(top_k(query_embeddings, gallery_embeddings, 1), queries.labels, gallery.labels, 1)


def main() -> None:
    from simrec.infra.spark import get_spark

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_folder", type=Path)
    args = parser.parse_args()
    lineage = read_lineage(args.run_folder / "ingest" / "lineage")
    recall = test_recall_at_1(get_spark("simrec-recall"), lineage, args.run_folder / "train" / "model")
    print(f"test recall@1 (test -> train gallery, cosine): {recall:.4f}")


if __name__ == "__main__":
    main()
