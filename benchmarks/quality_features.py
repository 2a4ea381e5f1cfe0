"""Exploration for unseen classes (not a pipeline option): which descriptor of a trained model retrieves
classes it never saw best — the embedding, the pre-projection features (global average pool of the last
block), the second block's pooled features, or both pooled levels — alone and fused with the normalised
pixels (weight w), measured by evaluate's `measure` on a model benchmarks/quality.py trained.

  nice -n 5 .envs/steps/bin/python benchmarks/quality_features.py .simrec/quality/<model folder>"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tensorflow as tf
from quality import load_catalogue

from simrec.embedding.embedder import pixel_vectors
from simrec.evaluate.measure import measure


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_folder", type=Path, help="holds embedding.keras (the strong architecture)")
    parser.add_argument("--source", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--unseen", default="2,4,6")
    args = parser.parse_args()
    unseen = tuple(int(c) for c in args.unseen.split(","))
    catalogue, _ = load_catalogue(args.source)
    model = tf.keras.models.load_model(args.model_folder / "embedding.keras", compile=False)
    relus = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.ReLU)]
    pool = next(layer for layer in model.layers if isinstance(layer, tf.keras.layers.GlobalAveragePooling2D))
    outputs = {
        "embedding": model.output,
        "pre-projection": pool.output,
        "block 2 pooled": tf.keras.layers.GlobalAveragePooling2D(name="probe_block2")(relus[3].output),
    }
    probe = tf.keras.Model(model.input, list(outputs.values()))
    images = catalogue.pixels[..., None].astype(np.float32)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    for start in range(0, len(images), 1024):
        for name, value in zip(outputs, probe(images[start : start + 1024], training=False), strict=True):
            parts[name].append(value.numpy())
    descriptors = {name: _unit(np.concatenate(values)) for name, values in parts.items()}
    descriptors["pre-projection + block 2"] = _unit(
        np.concatenate([descriptors["pre-projection"], descriptors["block 2 pooled"]], axis=1)
    )
    pixels = pixel_vectors(catalogue.pixels)
    print("| descriptor | pixel weight | all recall@1 | unseen recall@1 |\n|---|---|---|---|")
    for name, vectors in descriptors.items():
        for weight in (0.0, 0.3, 0.5):
            fused = np.concatenate([np.sqrt(1 - weight) * vectors, np.sqrt(weight) * pixels], axis=1)
            result = measure(fused.astype(np.float32), catalogue, unseen)
            print(
                f"| {name} | {weight} | {result['all']['metrics']['recall_at_1']:.4f} | "
                f"{result['unseen']['metrics']['recall_at_1']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
