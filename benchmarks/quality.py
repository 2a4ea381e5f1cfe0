"""Retrieval-quality ablation on the real Fashion-MNIST: one row per recipe, raw pixels first.

Each recipe is trained by the training loop the train step and tune run (simrec.train.loop.run_training,
single process, in-memory input, 10% of the train split held out for validation by a stable hash of
item_id), twice: on all classes, and without the unseen classes (default 2,4,6). The saved model is
wrapped with the recipe's inference options (simrec.train.model.inference_model, what the train step
saves), loaded by EmbeddingModel (what evaluate's Spark workers load; serving: its ONNX export) and measured
by evaluate's own `measure` (test items as queries against the train gallery, cosine, exact search): on all
classes for the model trained on all, on the unseen classes alone for the model trained without them.
Recipes that differ only in inference options (flip averaging, pixel fusion) share one training.

  nice -n 5 .envs/steps/bin/python benchmarks/quality.py [--recipes NAME,...] [--results DIR]

Finished trainings are kept under --results (a recipe's model per protocol), so an interrupted run
continues where it stopped and the table can be printed again without training."""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from simrec.data.catalogue import load_fashion_mnist
from simrec.embedding.descriptors import GradientHistogram
from simrec.embedding.embedder import pixel_vectors
from simrec.embedding.keras_model import EmbeddingModel
from simrec.evaluate.measure import Catalogue, measure
from simrec.train.data import Arrays, memory_source
from simrec.train.loop import EMBEDDING_MODEL_FILE, TrainJob, run_training
from simrec.train.model import inference_model
from simrec.train.params import TrainParams, train_component_defaults

INFERENCE_OPTIONS = ("flip_average", "pixel_weight", "hog_weight")
COLUMNS = ("recall_at_1", "recall_at_5", "map_at_10")


@dataclass(frozen=True)
class Recipe:
    name: str
    params: dict[str, Any] = field(default_factory=dict)  # TrainParams overrides

    def training(self) -> TrainParams:
        """What is trained (recipes equal in this share one trained model): inference options off, as
        scores() applies them to the trained model."""
        values = {k: v for k, v in self.params.items() if k not in INFERENCE_OPTIONS}
        return TrainParams.component_defaults(**values, flip_average=False, pixel_weight=0.0, hog_weight=0.0)

    def inference(self) -> dict[str, Any]:
        defaults = TrainParams.component_defaults()
        return {k: self.params.get(k, getattr(defaults, k)) for k in INFERENCE_OPTIONS}


BASE = {"epochs": 6, "lr_schedule": "constant"}  # conf/embedded before this ablation
COSINE = {"epochs": 6, "lr_schedule": "cosine"}
COSINE_10 = {"epochs": 10, "lr_schedule": "cosine"}
RECIPES = [
    Recipe("baseline: 6 epochs, constant LR", BASE),
    Recipe("baseline + flip averaging", BASE | {"flip_average": True}),
    Recipe("baseline + pixels w=0.3", BASE | {"pixel_weight": 0.3}),
    Recipe("cosine LR, 6 epochs", COSINE),
    Recipe("cosine LR, 6 epochs + flip averaging", COSINE | {"flip_average": True}),
    Recipe("cosine LR, 6 epochs + flip + pixels w=0.2", COSINE | {"flip_average": True, "pixel_weight": 0.2}),
    Recipe("cosine LR, 6 epochs + flip + pixels w=0.4", COSINE | {"flip_average": True, "pixel_weight": 0.4}),
    Recipe("cosine LR, 10 epochs + flip averaging", COSINE_10 | {"flip_average": True}),
    Recipe(
        "cosine LR, 10 epochs + flip + pixels w=0.3", COSINE_10 | {"flip_average": True, "pixel_weight": 0.3}
    ),
    Recipe("cosine LR, 10 epochs + flip + HOG w=0.3", COSINE_10 | {"flip_average": True, "hog_weight": 0.3}),
    Recipe("cosine LR, 10 epochs + flip + HOG w=0.5", COSINE_10 | {"flip_average": True, "hog_weight": 0.5}),
    Recipe(
        "cosine LR, 10 epochs + flip + HOG w=0.4 + pixels w=0.1",
        COSINE_10 | {"flip_average": True, "hog_weight": 0.4, "pixel_weight": 0.1},
    ),
    Recipe(
        "cosine LR, 10 epochs + HOG w=0.5 (no flip)", COSINE_10 | {"flip_average": False, "hog_weight": 0.5}
    ),
    Recipe("cosine LR, 10 epochs + flip + HOG w=0.7", COSINE_10 | {"flip_average": True, "hog_weight": 0.7}),
    Recipe(
        "cosine LR, 10 epochs + HOG w=0.6 (no flip)", COSINE_10 | {"flip_average": False, "hog_weight": 0.6}
    ),
    Recipe(
        "cosine LR, 10 epochs + HOG w=0.7 (no flip)", COSINE_10 | {"flip_average": False, "hog_weight": 0.7}
    ),
]


def load_catalogue(source: str) -> tuple[Catalogue, np.ndarray]:
    """(the catalogue as evaluate sees it, the rows of the train table held out for validation)."""
    with tempfile.TemporaryDirectory() as scratch:
        splits, _ = load_fashion_mnist(source, None, Path(scratch))
    names = sorted(splits)
    items = pd.concat([splits[name].encoded().assign(table=name) for name in names], ignore_index=True)
    pixels = np.concatenate([splits[name].pixels for name in names])
    buckets = np.array([int(hashlib.sha256(i.encode()).hexdigest()[:8], 16) % 1000 for i in items["item_id"]])
    cut = round(train_component_defaults()["validation_fraction"] * 1000)
    held_out = (items["table"].to_numpy() == "train") & (buckets < cut)
    return Catalogue(items, pixels), held_out


def train_recipe(
    recipe: Recipe, catalogue: Catalogue, held_out: np.ndarray, exclude: tuple[int, ...], out: Path
) -> float:
    """Trains the recipe (inference options off) into out; returns training seconds."""
    params = recipe.training()
    items = catalogue.items
    keep = ~items["label"].isin(exclude).to_numpy()
    in_train = (items["table"].to_numpy() == "train") & keep
    rows = {"train": np.flatnonzero(in_train & ~held_out), "validation": np.flatnonzero(in_train & held_out)}
    arrays = {
        name: Arrays(items["image"].to_numpy(dtype=object)[r], items["label"].to_numpy(dtype=np.int32)[r])
        for name, r in rows.items()
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as checkpoints:
        run_training(
            TrainJob(
                params=params,
                source=memory_source(arrays["train"], params.batch_size, params.seed),
                steps_per_epoch=len(arrays["train"]) // params.batch_size,
                validation=arrays["validation"],
                checkpoint_dir=checkpoints,
                model_dir=str(out),
                threads=0,
            ),
            distributed=False,
        )
    return time.perf_counter() - started


def scores(model_file: Path, recipe: Recipe, catalogue: Catalogue, exclude: tuple[int, ...]) -> dict:
    """evaluate's measurements of the trained model wrapped with the recipe's inference options."""
    embedder = tf.keras.models.load_model(model_file, compile=False)
    options = recipe.inference()
    with tempfile.TemporaryDirectory() as scratch:
        wrapped = Path(scratch) / EMBEDDING_MODEL_FILE
        inference_model(embedder, **options).save(wrapped)
        vectors = EmbeddingModel(wrapped).embed_pixels(catalogue.pixels)
    return measure(vectors, catalogue, exclude)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--unseen", default="2,4,6", help="classes left out of the unseen-protocol trainings")
    parser.add_argument("--recipes", default="", help="comma-separated recipe numbers (default: all)")
    parser.add_argument("--results", type=Path, default=Path(".simrec/quality"))
    args = parser.parse_args()
    unseen = tuple(int(c) for c in args.unseen.split(","))
    chosen = [RECIPES[int(i)] for i in args.recipes.split(",")] if args.recipes else RECIPES
    catalogue, held_out = load_catalogue(args.source)
    hog = tf.math.l2_normalize(GradientHistogram()(catalogue.pixels[..., None]), axis=1).numpy()
    rows = [
        ("raw pixels", measure(pixel_vectors(catalogue.pixels), catalogue, unseen), {}, {}),
        ("HOG (training-free, the hog_weight descriptor alone)", measure(hog, catalogue, unseen), {}, {}),
    ]
    for recipe in chosen:
        measured, seconds = {}, {}
        for protocol, exclude in (("all", ()), ("unseen", unseen)):
            trained = recipe.training().model_dump()
            key = hashlib.sha256(json.dumps([trained, exclude], sort_keys=True).encode()).hexdigest()
            folder = args.results / key[:16]
            if not (folder / "seconds.json").exists():
                spent = train_recipe(recipe, catalogue, held_out, exclude, folder)
                (folder / "seconds.json").write_text(json.dumps({"seconds": spent, "params": trained}))
            seconds[protocol] = json.loads((folder / "seconds.json").read_text())["seconds"]
            measured[protocol] = scores(folder / EMBEDDING_MODEL_FILE, recipe, catalogue, exclude)[protocol]
        rows.append((recipe.name, measured, seconds, recipe.params))
        print(f"measured: {recipe.name}", flush=True)
    print_table(rows, unseen)


def print_table(rows: list[tuple[str, dict, dict, dict]], unseen: tuple[int, ...]) -> None:
    names = ",".join(map(str, unseen))
    header = [f"all {c}" for c in COLUMNS] + [f"unseen {names} {c}" for c in COLUMNS]
    print("| recipe | " + " | ".join(header) + " | train s (all / unseen) |")
    print("|---" * (len(header) + 2) + "|")
    for name, measured, seconds, _ in rows:
        values = [measured[p]["metrics"][c] for p in ("all", "unseen") for c in COLUMNS]
        spent = f"{seconds['all']:.0f} / {seconds['unseen']:.0f}" if seconds else "-"
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {spent} |")


if __name__ == "__main__":
    main()
