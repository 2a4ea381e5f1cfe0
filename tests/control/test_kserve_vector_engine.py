"""The KServe predictor of a profile with a vector engine (evaluate.vector_engine): simrec serve gets the
profile's URI and the engine's token from the Secret evaluate reads, and nothing of it when the engine is
off. The chart's side is in test_charts.py, the compiled deploy task's in test_pipeline.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from simrec.config import KServeConfig, VectorEngineConfig
from simrec.infra.errors import InputError
from simrec.kserve.manifest import ServedModel, render_inference_service
from simrec.kserve.settings import endpoint, vector_engine_from_json
from simrec.records import ENGINE_TOKEN_VARIABLE
from simrec.serving.cli import build_parser as serve_parser

SETTINGS = KServeConfig(namespace="serving", name="simrec")
ENGINE = VectorEngineConfig(uri="http://milvus.milvus:19530", alias="catalogue", token_secret="simrec-milvus")
MODEL = ServedModel("simrec", "3", "s3://simrec/mlflow/1/models/m-3/artifacts")


def container(engine: VectorEngineConfig | None) -> dict[str, Any]:
    isvc = render_inference_service(endpoint(SETTINGS, engine), MODEL)
    (served,) = isvc["spec"]["predictor"]["containers"]
    return served


def env_of(served: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in served["env"]}


def test_the_predictor_reaches_the_profiles_engine_with_the_token_evaluate_reads() -> None:
    served = container(ENGINE)
    assert served["args"][0] == "serve"
    assert serve_parser().parse_args(served["args"][1:]).vector_engine_uri == ENGINE.uri
    # the Secret and key the compiled evaluate task mounts as the same variable (test_pipeline.py)
    assert env_of(served)[ENGINE_TOKEN_VARIABLE] == {
        "name": ENGINE_TOKEN_VARIABLE,
        "valueFrom": {"secretKeyRef": {"name": "simrec-milvus", "key": "token"}},
    }


def test_an_engine_without_a_token_secret_gives_the_uri_and_no_token() -> None:
    served = container(ENGINE.model_copy(update={"token_secret": None}))
    assert serve_parser().parse_args(served["args"][1:]).vector_engine_uri == ENGINE.uri
    assert ENGINE_TOKEN_VARIABLE not in env_of(served)


def test_without_an_engine_the_predictor_is_unchanged() -> None:
    served = container(None)
    assert "--vector-engine-uri" not in served["args"]
    assert serve_parser().parse_args(served["args"][1:]).vector_engine_uri is None
    assert ENGINE_TOKEN_VARIABLE not in env_of(served)
    assert render_inference_service(endpoint(SETTINGS), MODEL) == render_inference_service(
        endpoint(SETTINGS, None), MODEL
    )
    # only the container's args and env differ with an engine
    with_engine = container(ENGINE)
    assert {key for key in served if served[key] != with_engine[key]} == {"args", "env"}


def test_deploy_reads_the_engine_as_the_profile_validates_it() -> None:
    assert vector_engine_from_json(json.dumps(ENGINE.model_dump(mode="json"))) == ENGINE
    refused = {
        "{uri": "--vector-engine: not JSON",
        "{}": "--vector-engine: uri: Field required",
        '{"uri": "http://user:secret@milvus:19530"}': "--vector-engine: uri: .*carries credentials",
        '{"uri": "http://milvus:19530", "token_secret": "Not_A_Name"}': "--vector-engine: token_secret",
    }
    for text, message in refused.items():
        with pytest.raises(InputError, match=message):
            vector_engine_from_json(text)
