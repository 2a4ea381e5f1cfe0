"""Small recommender packages for tests: an untrained (but deterministic) embedding model over generated
catalogue items. Building one needs TensorFlow (the Keras model, its ONNX export): the steps environment.
The serve environment has no TensorFlow, so its tests build theirs with build_in_steps_env, which runs
this same build_package in the steps environment: one way to make a package, the pipeline's (evaluate
runs in the steps image too), rather than checked-in binary packages that would drift from the code.

    python tests/packages.py FOLDER:COUNT:SEED[:KIND] ...   (steps environment; KIND: index kind)"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from datagen import class_image


def catalogue_items(count: int = 300, seed: int = 0, prefix: str = "item") -> pd.DataFrame:
    """Generated catalogue items (item_id, label, label_name, image PNG, and pixels for convenience)."""
    from simrec.data.codec import encode_png
    from simrec.data.fashion_mnist import LABEL_NAMES

    rng = random.Random(seed)
    labels = [i % 10 for i in range(count)]
    pixels = [np.frombuffer(class_image(label, rng), np.uint8).reshape(28, 28) for label in labels]
    return pd.DataFrame(
        {
            "item_id": [f"{prefix}-{i:05d}" for i in range(count)],
            "label": np.array(labels, np.int32),
            "label_name": [LABEL_NAMES[label] for label in labels],
            "image": [encode_png(p) for p in pixels],
            "pixels": pixels,
        }
    )


def embedding_model_file(folder: Path, seed: int = 0, dim: int = 16) -> Path:
    import tensorflow as tf

    from simrec.train.model import build_embedding_model

    tf.keras.utils.set_random_seed(seed)
    path = folder / "embedding.keras"
    folder.mkdir(parents=True, exist_ok=True)
    build_embedding_model("seed", dim, 0.0).save(path)
    return path


def build_package(folder: Path, count: int = 300, seed: int = 0, kind: str = "hnsw") -> Path:
    """A complete recommender package in `folder` (model, index of that kind, items, manifest)."""
    from simrec.embedding.keras_model import EmbeddingModel
    from simrec.recommender.package import write_package
    from simrec.retrieval.index import IndexSpec

    model_file = embedding_model_file(folder.parent / f"{folder.name}-model", seed)
    items = catalogue_items(count, seed)
    vectors = EmbeddingModel(model_file).embed_pixels(np.stack(items["pixels"].to_list()))
    return write_package(folder, model_file, items, vectors, IndexSpec(kind=kind))


def build_in_steps_env(*packages: tuple) -> list[Path]:
    """build_package(folder, count, seed[, kind]) for each, run by the steps environment's Python (from
    the serve environment's tests), all in one process: TensorFlow's start is most of a small package's
    time."""
    from simrec.infra import paths

    program = paths.envs_dir() / "steps" / "bin" / "python"
    here = Path(__file__).resolve().parent
    python_path = os.pathsep.join([str(paths.CHECKOUT / "src"), str(here)])
    done = subprocess.run(
        [str(program), str(Path(__file__).resolve()), *(":".join(map(str, p)) for p in packages)],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": python_path, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"building packages in the steps environment failed:\n{done.stderr[-3000:]}")
    return [package[0] for package in packages]


def run_validate(package: Path, outputs: Path) -> subprocess.CompletedProcess:
    """The validate step as the pipeline runs it: `simrec validate` in the serve environment."""
    from simrec.infra import paths

    program = paths.envs_dir() / "serve" / "bin" / "simrec"
    command = [str(program), "validate", "--package", str(package)]
    command += ["--model-out", str(outputs / "model"), "--validation-out", str(outputs / "validation")]
    return subprocess.run(
        command, capture_output=True, text=True, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    )


if __name__ == "__main__":
    for spec in sys.argv[1:]:  # FOLDER:COUNT:SEED[:KIND]
        parts = spec.split(":")
        kind = "hnsw" if parts[-1].isdigit() else parts.pop()
        build_package(Path(":".join(parts[:-2])), int(parts[-2]), int(parts[-1]), kind)
