"""The recommender as an MLflow pyfunc: the predict contract every consumer of a registered model sees.

Input: a DataFrame with one query per row, either `image` (a base64-encoded 8-bit grayscale 28x28 PNG)
or `item_id` (a catalogue item); param `k` (default 5). Output: one row per (query, rank) with `query`
(the input row's position), `rank` (1 = most similar), `item_id`, `label`, `label_name`, `score` (cosine).

The model itself is defined from code (src/simrec/recommender/pyfunc_model.py, MLflow "models from
code"): no pickled object, only this class, the package folder as the artifact `package`, and the serve
image's pins."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from simrec.data.codec import decode_png, png_base64
from simrec.infra.errors import InputError

if TYPE_CHECKING:
    from mlflow.models import ModelSignature

    from simrec.recommender.package import Neighbour, Recommender

PACKAGE_ARTIFACT = "package"
QUERY_COLUMNS = ("image", "item_id")
OUTPUT_COLUMNS = ["query", "rank", "item_id", "label", "label_name", "score"]
DEFAULT_K = 5
MAX_K = 100
CODE_FILE = Path(__file__).with_name("pyfunc_model.py")


def signature() -> ModelSignature:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        # Both optional: a request carries whichever kind of query it has, row by row.
        inputs=Schema([ColSpec("string", name, required=False) for name in QUERY_COLUMNS]),
        outputs=Schema(
            [
                ColSpec("long", "query"),
                ColSpec("long", "rank"),
                ColSpec("string", "item_id"),
                ColSpec("long", "label"),
                ColSpec("string", "label_name"),
                ColSpec("double", "score"),
            ]
        ),
        params=ParamSchema([ParamSpec("k", "long", DEFAULT_K)]),
    )


def image_query(png: bytes) -> dict[str, str | None]:
    return {"image": png_base64(png), "item_id": None}


def item_query(item_id: str) -> dict[str, str | None]:
    return {"image": None, "item_id": item_id}


def _present(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _k(params: dict[str, Any] | None) -> int:
    k = (params or {}).get("k", DEFAULT_K)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InputError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
    return k


def _pixels(text: str, row: int):
    try:
        png = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"row {row}: image is not base64 ({exc})") from exc
    try:
        return decode_png(png)
    except InputError as exc:
        raise InputError(f"row {row}: {exc}") from exc


def answer(recommender: Recommender, queries: pd.DataFrame, k: int) -> pd.DataFrame:
    """The predict contract over a loaded Recommender (one batched search per kind of query)."""
    import numpy as np

    columns = {name: queries[name] if name in queries else [None] * len(queries) for name in QUERY_COLUMNS}
    by_item: dict[int, str] = {}
    by_image: dict[int, Any] = {}
    for row, (image, item_id) in enumerate(zip(columns["image"], columns["item_id"], strict=True)):
        if _present(image) == _present(item_id):
            raise InputError(f"row {row}: give exactly one of image (base64 PNG) or item_id")
        if _present(item_id):
            by_item[row] = item_id
        else:
            by_image[row] = _pixels(image, row)
    found: dict[int, list[Neighbour]] = {}
    if by_item:
        found |= dict(zip(by_item, recommender.similar_to_items(list(by_item.values()), k), strict=True))
    if by_image:
        pixels = np.stack(list(by_image.values()))
        found |= dict(zip(by_image, recommender.similar_to_pixels(pixels, k), strict=True))
    records = [
        (row, rank, n.item_id, n.label, n.label_name, n.score)
        for row in range(len(queries))
        for rank, n in enumerate(found[row], 1)
    ]
    frame = pd.DataFrame.from_records(records, columns=OUTPUT_COLUMNS)
    return frame.astype({"query": "int64", "rank": "int64", "label": "int64", "score": "float64"})


try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # the control environment has no MLflow; it never loads the model
    PythonModel = object  # type: ignore[misc,assignment]


class RecommenderPyfunc(PythonModel):
    """Loads the package artifact once per process; predict follows the contract above."""

    def load_context(self, context) -> None:
        from simrec.recommender.package import Recommender

        self.recommender = Recommender(Path(context.artifacts[PACKAGE_ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        return answer(self.recommender, model_input, _k(params))
