"""The records that cross a step boundary, typed once: ingest's lineage, evaluate's evaluation (with the
gate's decision), validate's validation and register's registration.

The step that writes a record and every step that reads it use the same model here (write:
`write_record`, i.e. `model_dump(mode="json")`; read: `read_record` / `parse_record`, i.e.
`model_validate`), so a field's name and type are declared in one place instead of being re-checked by
hand on each side. A record that does not fit is refused as one InputError line naming its source and the
fields at fault, never as a pydantic traceback.

The JSON is persisted (KFP outputs, MLflow artifacts evaluation.json / validation.json, registry tags),
so field names are the ones older readers know: add fields, never rename them. Every model keeps fields
it does not declare (extra="allow"): a reader passes on what a newer writer added."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from simrec.infra.errors import InputError, validation_problems
from simrec.infra.files import write_json_atomic

# The one spelling of the gate's modes (config, evaluate's flag, the gate's record, register)
GateMode = Literal["enabled", "dry-run", "disabled"]
GATE_MODES: tuple[str, ...] = get_args(GateMode)
# ... and of the nearest-neighbour index kinds (config, evaluate's flag, simrec.retrieval.index)
IndexKind = Literal["hnsw", "exact", "hnsw_sq8", "ivfpq"]
# ... and the smallest value of each index setting (IndexSpec, config's evaluate.index). faiss takes
# smaller values without a word: an HNSW degree below 2 crashes it (segfault or assertion), an efSearch
# below 1 silently returns fewer and wrong neighbours; nlist, nprobe, pq_m below 1 crash or return
# nothing; a rerank factor below 1 keeps fewer candidates than asked for.
INDEX_SMALLEST = {
    "m": 2,
    "ef_construction": 1,
    "ef_search": 1,
    "nlist": 1,
    "nprobe": 1,
    "pq_m": 1,
    "pca_dim": 0,
    "rerank": 1,
}
# ... and of a vector engine's collection and alias names (Milvus's rule: config's evaluate.vector_engine,
# simrec.retrieval.engine)
ENGINE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,200}$"
# ... and of the environment variable that carries the engine's token to every process (evaluate, serve)
ENGINE_TOKEN_VARIABLE = "SIMREC_VECTOR_ENGINE_TOKEN"
# ... and of the key holding it in the Secret that evaluate.vector_engine.token_secret names (the evaluate
# pod and the KServe predictor read the same key)
ENGINE_TOKEN_KEY = "token"


class Record(BaseModel):
    model_config = ConfigDict(extra="allow")


R = TypeVar("R", bound=Record)


def parse_record(model: type[R], data: Any, where: str, what: str) -> R:
    """`data` (parsed JSON) as `model`; InputError '<where>: not <what> (field: problem; ...)' otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{where}: not {what} ({validation_problems(exc.errors())})") from exc


def load_json(path: Path, what: str) -> Any:
    """A JSON file's content; InputError naming the file when it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not {what} ({exc.__class__.__name__}: {exc})") from exc


def read_record(model: type[R], path: Path, what: str) -> R:
    """The record in the JSON file `path` (InputError naming the file when it is not one)."""
    return parse_record(model, load_json(path, what), str(path), what)


def write_record(path: Path, record: Record) -> None:
    """The record as JSON, written atomically."""
    write_json_atomic(path, record.model_dump(mode="json"))


def whole_numbers(value: Any) -> Any:
    """A JSON parameter passes through protobuf's Struct on KFP (and in kfp.local), where every number is a
    double: table version 3 arrives as 3.0. The lineage holds no fractions: whole numbers are ints again."""
    if isinstance(value, dict):
        return {key: whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [whole_numbers(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --- ingest: the data lineage ---------------------------------------------------------------------


class Table(Record):
    """One Delta table as a step must read it: where, and which version exactly."""

    uri: str
    version: StrictInt
    rows: int | None = None


class Tables(Record):
    """The catalogue's tables by name: always train; test (and any other) as ingest wrote them."""

    train: Table
    __pydantic_extra__: dict[str, Table] = Field(init=False)  # every other table is a Table too

    def items(self) -> list[tuple[str, Table]]:
        return list(self)  # pydantic yields the declared fields, then the extra ones


class Lineage(Record):
    """Ingest's record of the exact table versions (and source checksums) later steps read. It travels as
    a JSON *parameter*, so whole numbers may arrive as floats (see whole_numbers)."""

    tables: Tables
    sources: dict[str, dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _from_struct(cls, data: Any) -> Any:
        return whole_numbers(data)


# --- evaluate: the evaluation and the gate's decision ---------------------------------------------


class GateChampion(Record):
    """The champion a candidate was compared against, as it scored on the same test set."""

    version: int | str
    model_id: str | None = None
    recall_at_1: float | None = None


class GateDecision(Record):
    """The blessing gate's record: its settings, the decision and why, the champion compared against."""

    mode: GateMode
    min_recall_at_1: float | None = None
    max_regression: float | None = None
    blessed: bool
    reasons: list[str] = []
    champion: GateChampion | None = None


class Training(Record):
    """The training run an evaluated model came from (train's summary)."""

    mlflow_run_id: str | None = None
    params: dict[str, Any] = {}
    exclude_classes: list[int] = []


class EmbeddingsTable(Record):
    uri: str
    version: int


class Evaluation(Record):
    """Evaluate's output: the metrics, the gate's decision and everything that explains them."""

    model_id: str
    metrics: dict[str, float]
    gate: GateDecision
    lineage: Lineage
    training: Training
    results: dict[str, dict[str, Any]] = {}  # scorer -> protocol -> measured (metrics, per class)
    embeddings: EmbeddingsTable | None = None
    segments: dict[str, Any] = {}
    onnx: dict[str, Any] = {}
    index: dict[str, Any] = {}
    # where the package's vectors were published, as its manifest says: uri, alias, collection ({}: none)
    vector_engine: dict[str, str] = {}
    mlflow_run_id: str | None = None
    seconds: float | None = None


# --- validate --------------------------------------------------------------------------------------


class Check(Record):
    name: str
    ok: bool
    seconds: float


class Validation(Record):
    """Validate's output: the pyfunc folder it saved, loaded and queried in the serving environment."""

    ok: bool
    digest: str  # folder_sha256 of the validated pyfunc folder: what register must be given
    checks: list[Check] = []
    seconds: float | None = None
    smoke_queries: int | None = None
    mlflow_version: str | None = None
    lock: str | None = None


# --- register --------------------------------------------------------------------------------------


class Registration(Record):
    """Register's output: the registered version, its aliases, and what the gate's decision did."""

    name: str
    version: int
    aliases: list[str]
    model_uri: str
    champion_uri: str
    model_id: str
    mlflow_run_id: str | None = None
    logged_model_id: str | None = None  # None: already registered, nothing logged this time
    pipeline_run_id: str | None = None
    promoted: bool
    decision: str
    previous_champion: str | None = None
