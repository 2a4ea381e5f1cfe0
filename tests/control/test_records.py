"""simrec.records: the typed records that cross a step boundary, as each writer writes them and each reader
reads them back (JSON round trip), a record that does not fit refused in one line naming its source, and
the numbers a KFP JSON parameter turns into floats made whole again."""

from __future__ import annotations

import json

import pytest

from simrec.infra.errors import InputError
from simrec.records import (
    GATE_MODES,
    Evaluation,
    GateDecision,
    Lineage,
    Registration,
    Validation,
    parse_record,
    read_record,
    write_record,
)

LINEAGE = {
    "tables": {
        "train": {"uri": "/lake/train", "version": 4, "rows": 600},
        "test": {"uri": "/lake/test", "version": 2, "rows": 100},
    },
    "sources": {"train-images-idx3-ubyte.gz": {"path": "/src/t.gz", "sha256": "1" * 64}},
}
EVALUATION = {
    "model_id": "m" * 64,
    "metrics": {"recall_at_1": 0.8, "map_at_10": 0.6},
    "results": {"model": {"all": {"metrics": {"recall_at_1": 0.8}, "per_class_recall_at_1": {"0": 0.9}}}},
    "gate": {
        "mode": "enabled",
        "min_recall_at_1": 0.5,
        "max_regression": 0.01,
        "blessed": True,
        "reasons": ["recall_at_1 0.8000 >= minimum 0.5000"],
        "champion": {"version": "1", "model_id": "c" * 64, "recall_at_1": 0.7},
    },
    "lineage": LINEAGE,
    "training": {"mlflow_run_id": "run-1", "params": {"epochs": 2}, "exclude_classes": [2, 4]},
    "embeddings": {"uri": "/lake/embeddings", "version": 3},
    "segments": {"clusters": 4, "points": 100, "sizes": [50, 30, 15, 5], "noise": 0},
    "onnx": {"opset": 17, "agreement": {"max_abs_diff": 1e-6}},
    "index": {"kind": "hnsw", "m": 32, "ef_search": 64},
    "vector_engine": {"uri": "http://milvus:19530", "alias": "simrec", "collection": "simrec_v2"},
    "mlflow_run_id": "run-2",
    "seconds": 12.5,
}
VALIDATION = {
    "ok": True,
    "checks": [{"name": "load pyfunc", "ok": True, "seconds": 0.5}],
    "seconds": 3.2,
    "digest": "d" * 64,
    "smoke_queries": 3,
    "mlflow_version": "3.17.0",
    "lock": "/images/serve/requirements.txt",
}
REGISTRATION = {
    "name": "simrec",
    "version": 2,
    "aliases": ["challenger"],
    "model_uri": "models:/simrec/2",
    "champion_uri": "models:/simrec@champion",
    "model_id": "m" * 64,
    "logged_model_id": "lm-1",
    "mlflow_run_id": "run-3",
    "pipeline_run_id": "simrec-20261127-120000",
    "promoted": False,
    "decision": "not promoted, not blessed: worse",
    "previous_champion": "1",
}


@pytest.mark.parametrize(
    ("model", "data"),
    [(Lineage, LINEAGE), (Evaluation, EVALUATION), (Validation, VALIDATION), (Registration, REGISTRATION)],
    ids=["lineage", "evaluation", "validation", "registration"],
)
def test_a_record_written_is_read_back_unchanged(tmp_path, model, data) -> None:
    record = model.model_validate(data)
    write_record(tmp_path / "record.json", record)
    # the JSON keeps every field name older readers know, with the values as given
    assert json.loads((tmp_path / "record.json").read_text()) == data
    assert read_record(model, tmp_path / "record.json", "a record") == record


def test_fields_a_newer_writer_adds_are_kept() -> None:
    newer = EVALUATION | {"calibration": {"ece": 0.02}}
    record = Evaluation.model_validate(newer)
    assert record.model_dump(mode="json")["calibration"] == {"ece": 0.02}


def test_a_kfp_struct_parameter_gives_whole_numbers_back_as_ints() -> None:
    # through a KFP STRUCT parameter (protobuf) every number arrives as a double
    as_struct = json.loads(json.dumps(LINEAGE).replace(": 4,", ": 4.0,").replace(": 600}", ": 600.0}"))
    assert as_struct["tables"]["train"] == {"uri": "/lake/train", "version": 4.0, "rows": 600.0}
    lineage = Lineage.model_validate(as_struct)
    train = lineage.tables.train
    assert (train.version, train.rows) == (4, 600) and type(train.version) is type(train.rows) is int
    assert lineage.model_dump(mode="json") == LINEAGE
    # also inside an evaluation, whose lineage came from the parameter
    assert Evaluation.model_validate(EVALUATION | {"lineage": as_struct}).lineage == Lineage.model_validate(
        LINEAGE
    )
    with pytest.raises(InputError, match=r"tables\.train\.version: Input should be a valid integer"):
        parse_record(Lineage, {"tables": {"train": {"uri": "/x", "version": 4.5}}}, "--lineage", "a lineage")


def test_every_table_is_a_table_and_train_is_required() -> None:
    tables = Lineage.model_validate(LINEAGE).tables
    assert [name for name, _ in tables.items()] == ["train", "test"] and tables.items()[1][1].version == 2
    for data, problem in [
        ({"tables": {"test": LINEAGE["tables"]["test"]}}, "tables.train: Field required"),
        ({"tables": LINEAGE["tables"] | {"test": {"uri": "/t"}}}, "tables.test.version: Field required"),
        ({"tables": []}, "tables: Input should be a valid dictionary"),
        ([1], "value: Input should be a valid dictionary"),
    ]:
        with pytest.raises(InputError, match=rf"^lineage\.json: not an ingest lineage \({problem}"):
            parse_record(Lineage, data, "lineage.json", "an ingest lineage")


@pytest.mark.parametrize(
    ("model", "change", "message"),
    [
        (Evaluation, lambda r: r["gate"].update(mode="maybe"), r"gate\.mode: Input should be 'enabled'"),
        (Evaluation, lambda r: r.pop("metrics"), "metrics: Field required"),
        (Evaluation, lambda r: r["gate"].pop("blessed"), r"gate\.blessed: Field required"),
        (Validation, lambda r: r.pop("digest"), "digest: Field required"),
        (Validation, lambda r: r["checks"][0].pop("name"), r"checks\.0\.name: Field required"),
        (Registration, lambda r: r.update(version="two"), "version: Input should be a valid integer"),
    ],
)  # fmt: skip
def test_a_record_that_does_not_fit_is_refused_in_one_line_naming_the_file(tmp_path, model, change, message):
    data = json.loads(
        json.dumps({Evaluation: EVALUATION, Validation: VALIDATION, Registration: REGISTRATION}[model])
    )
    change(data)
    path = tmp_path / "record.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=rf"record\.json: not a record \(.*{message}") as refused:
        read_record(model, path, "a record")
    assert "\n" not in str(refused.value) and "pydantic" not in str(refused.value)


def test_a_file_that_is_no_json_or_missing_is_named(tmp_path) -> None:
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match=r"broken\.json: not a validation record \(JSONDecodeError"):
        read_record(Validation, tmp_path / "broken.json", "a validation record")
    with pytest.raises(InputError, match=r"missing\.json: not a validation record \(FileNotFoundError"):
        read_record(Validation, tmp_path / "missing.json", "a validation record")


def test_the_gate_modes_have_one_spelling() -> None:
    assert GATE_MODES == ("enabled", "dry-run", "disabled")
    for mode in GATE_MODES:
        assert GateDecision(mode=mode, blessed=True).mode == mode
