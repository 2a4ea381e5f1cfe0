"""register: a package validated in the serve environment becomes a registered version with its lineage,
and aliases follow the gate; `simrec lineage` reads the chain back. Real sqlite MLflow store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from packages import build_package
from registry_helpers import evaluation, run_validate, serve_simrec, training_run, write_json

from simrec.cli import main as simrec
from simrec.infra.errors import InputError
from simrec.infra.files import folder_sha256
from simrec.recommender.package import MANIFEST_FILE
from simrec.records import GateDecision
from simrec.registry import models as registry
from simrec.registry.registration import promotion
from simrec.registry.tracking import PIPELINE_RUN_ENV
from simrec.steps import register as register_step
from simrec.steps.register import read_evaluation, read_validation


@pytest.fixture
def validated(models) -> tuple[Path, Path, str]:
    return models[0]


def _register(validated, tmp_path: Path, name: str = "simrec", experiment: str = "simrec", **gate) -> dict:
    """The step's command line, in this process, with the run's identity where a pod has it (its env, from
    the downward API); returns its registered output."""
    model, validation, model_id = validated
    outputs = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
    outputs.mkdir()
    record = evaluation(model_id, gate.pop("run_id"), **gate)
    evaluation_file = write_json(outputs / "evaluation.json", record)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(PIPELINE_RUN_ENV, "simrec-20261127-120000")
        simrec(
            ["register", "--model", str(model), "--evaluation", str(evaluation_file), "--validation",
             str(validation), "--model-name", name, "--git-sha", "0a1b2c3d", "--experiment", experiment,
             "--registered-out", str(outputs / "registered"), "--version-out", str(outputs / "version")]
        )  # fmt: skip
    registered = json.loads((outputs / "registered").read_text())
    assert (outputs / "version").read_text() == str(registered["version"])
    return registered


def _aliases(name: str = "simrec") -> dict[str, str]:
    return {alias: str(v) for alias, v in registry.client().get_registered_model(name).aliases.items()}


def test_a_blessed_first_model_becomes_champion_with_its_lineage(tracking, validated, tmp_path, capsys):
    import mlflow

    run_id = training_run()
    registered = _register(validated, tmp_path, run_id=run_id, champion=None)
    assert registered["version"] == 1 and registered["aliases"] == ["challenger", "champion"]
    assert registered["promoted"] and registered["model_uri"] == "models:/simrec/1"

    version = registry.resolve("simrec@champion")
    tags = version.tags
    assert tags["simrec.delta.train.uri"] == "/lake/train" and tags["simrec.delta.train.version"] == "4"
    assert tags["simrec.delta.test.version"] == "2" and tags["simrec.delta.train.rows"] == "600"
    assert tags["simrec.source.train-images-idx3-ubyte.gz.sha256"] == "1" * 64
    assert tags["simrec.git_sha"] == "0a1b2c3d" and tags["simrec.pipeline_run_id"] == "simrec-20261127-120000"
    assert tags["simrec.train.epochs"] == "2" and tags["simrec.train.architecture"] == '"seed"'
    assert tags["simrec.metric.recall_at_1"] == "0.8" and tags["simrec.model_id"] == validated[2]
    assert tags["simrec.gate.mode"] == "enabled" and tags["simrec.gate.blessed"] == "true"
    assert tags["simrec.training_run_id"] == run_id and tags["simrec.promotion"].startswith("promoted")
    assert tags["simrec.vector_engine.collection"] == "simrec_v3"
    assert tags["simrec.vector_engine.alias"] == "simrec"
    assert tags["simrec.vector_engine.uri"] == "http://milvus.milvus:19530"
    assert "recall@1 0.8000" in version.description
    # the register run hangs under the training run
    register_run = mlflow.get_run(registered["mlflow_run_id"])
    assert register_run.data.tags["mlflow.parentRunId"] == run_id

    # what the registry hands back is the validated folder, byte for byte, and it loads by alias
    downloaded = registry.download_model(version, tmp_path / "download")
    assert registry.stored_digest(downloaded) == folder_sha256(validated[0])
    package = registry.download_package(version, tmp_path / "download-package")
    assert json.loads((package / MANIFEST_FILE).read_text())["model_id"] == validated[2]
    model = mlflow.pyfunc.load_model("models:/simrec@champion")
    answer = model.predict(__import__("pandas").DataFrame([{"item_id": "item-00003"}]), params={"k": 2})
    assert answer["rank"].tolist() == [1, 2]

    # and the serving environment loads the downloaded copy
    script = (
        "import sys, mlflow, pandas as pd; m = mlflow.pyfunc.load_model(sys.argv[1]);"
        "print(len(m.predict(pd.DataFrame([{'item_id': 'item-00003'}]))))"
    )
    serve_python = serve_simrec().with_name("python")
    result = subprocess.run(
        [str(serve_python), "-c", script, str(downloaded)],
        capture_output=True,
        text=True,
        env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "5"

    capsys.readouterr()
    simrec(["lineage", "simrec@champion"])
    printed = capsys.readouterr().out
    assert "simrec/1  aliases: challenger, champion" in printed
    assert "/lake/train  version 4  600 rows" in printed and "/lake/test  version 2" in printed
    assert f"training run   {run_id}" in printed
    assert "epochs=2" in printed and "val_recall_at_1=0.71" in printed
    assert "embeddings   /lake/embeddings  version 1" in printed
    assert "vector engine  http://milvus.milvus:19530  collection simrec_v3  alias simrec" in printed
    assert "train-images-idx3-ubyte.gz  sha256 " + "1" * 64 in printed
    assert "git sha        0a1b2c3d" in printed and "pipeline run   simrec-20261127-120000" in printed


def test_an_unblessed_model_is_challenger_and_the_champion_stays(tracking, models, tmp_path) -> None:
    import mlflow

    run_id = training_run()
    # an experiment of its own, created by register: the run still names the training run
    first = _register(models[0], tmp_path, experiment="simrec-registry", run_id=run_id)
    register_run = mlflow.get_run(first["mlflow_run_id"])
    assert register_run.data.tags["simrec.training_run_id"] == run_id
    assert "mlflow.parentRunId" not in register_run.data.tags  # the UI nests runs of one experiment only
    second = _register(
        models[1], tmp_path, run_id=run_id, blessed=False, champion="1", reasons=["recall fell"]
    )
    assert second["version"] == 2 and not second["promoted"]
    assert _aliases() == {"champion": "1", "challenger": "2"}
    tags = registry.resolve("simrec/2").tags
    assert tags["simrec.promotion"] == "not promoted, not blessed: recall fell"
    assert tags["simrec.previous_champion"] == "1" and tags["simrec.gate.reasons"] == "recall fell"
    assert str(registry.champion("simrec").version) == "1"


def test_dry_run_records_the_decision_and_disabled_promotes(tracking, models, tmp_path) -> None:
    run_id = training_run()
    first = _register(models[0], tmp_path, run_id=run_id, mode="disabled", blessed=False)
    assert first["promoted"] and _aliases() == {"champion": "1", "challenger": "1"}

    dry = _register(models[1], tmp_path, run_id=run_id, mode="dry-run", blessed=True, champion="1")
    assert not dry["promoted"] and _aliases() == {"champion": "1", "challenger": "2"}
    assert registry.resolve("simrec/2").tags["simrec.promotion"] == "dry-run: would promote (blessed)"

    third = _register(models[2], tmp_path, run_id=run_id, mode="disabled", blessed=False, champion="1")
    assert third["promoted"] and third["previous_champion"] == "1"
    assert _aliases() == {"champion": "3", "challenger": "3"}


def test_registering_the_same_validated_folder_again_changes_nothing(tracking, models, tmp_path) -> None:
    run_id = training_run()
    first = _register(models[0], tmp_path, run_id=run_id)
    # a re-run of an unchanged pipeline: evaluate's cached record still compares against no champion
    again = _register(models[0], tmp_path, run_id=run_id)
    assert again["version"] == first["version"] == 1
    assert again["decision"] == "already registered as version 1: nothing changed"
    assert len(registry.client().search_model_versions("name = 'simrec'")) == 1
    assert _aliases() == {"champion": "1", "challenger": "1"}


@pytest.mark.parametrize(
    ("gate", "current", "promoted", "decision"),
    [
        ({"mode": "enabled", "blessed": True}, None, True, "promoted: blessed by the gate"),
        ({"mode": "enabled", "blessed": True, "champion": {"version": "1"}}, "1", True, "promoted"),
        ({"mode": "enabled", "blessed": False, "reasons": ["a", "b"]}, None, False, "not blessed: a; b"),
        ({"mode": "dry-run", "blessed": False}, None, False, "dry-run: would not promote"),
        ({"mode": "dry-run", "blessed": True}, None, False, "dry-run: would promote"),
        ({"mode": "disabled", "blessed": False}, "4", True, "promoted: no gate"),
        # blessed against version 1, but another run made version 2 champion meanwhile
        ({"mode": "enabled", "blessed": True, "champion": {"version": 1}}, "2", False, "against champion 1"),
        ({"mode": "enabled", "blessed": True}, "2", False, "against champion none"),
    ],
)  # fmt: skip
def test_promotion_follows_the_gate(gate, current, promoted, decision) -> None:
    result = promotion(GateDecision.model_validate(gate), current)
    assert result[0] is promoted and decision in result[1]


def test_nothing_is_registered_from_a_folder_that_was_not_validated(tracking, validated, tmp_path) -> None:
    model, validation, model_id = validated
    run_id = training_run()
    tampered = tmp_path / "model"
    shutil.copytree(model, tampered)
    (tampered / "MLmodel").write_text((tampered / "MLmodel").read_text() + "\n")
    with pytest.raises(InputError, match="not the folder that was validated"):
        register_step.register(
            tampered, read_evaluation(write_json(tmp_path / "e.json", evaluation(model_id, run_id))),
            read_validation(validation),
        )  # fmt: skip
    with pytest.raises(InputError, match=r"holds model .* but the evaluation is of 0000"):
        register_step.register(
            model, read_evaluation(write_json(tmp_path / "e.json", evaluation("0000", run_id))),
            read_validation(validation),
        )  # fmt: skip
    with pytest.raises(InputError, match=r"training run nope .* is not in this store"):
        register_step.register(
            model, read_evaluation(write_json(tmp_path / "e.json", evaluation(model_id, "nope"))),
            read_validation(validation),
        )  # fmt: skip
    failed = write_json(tmp_path / "v.json", json.loads(validation.read_text()) | {"ok": False})
    with pytest.raises(InputError, match="not a passed validation record"):
        read_validation(failed)
    assert registry.champion("simrec") is None
    assert registry.client().search_registered_models() == []


def test_a_broken_package_never_reaches_the_registry(tracking, tmp_path) -> None:
    """The pipeline's order: validate (serve environment) fails, so there is no model for register."""
    package = build_package(tmp_path / "package", count=30)
    index = package / "index.faiss"
    index.write_bytes(index.read_bytes()[:64])
    result = run_validate(package, tmp_path / "validate")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("simrec validate: error: check 'load pyfunc'")
    assert not (tmp_path / "validate" / "model").exists()
    assert not (tmp_path / "validate" / "validation").exists()
    assert registry.client().search_registered_models() == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.pop("gate"), "gate: Field required"),
        (lambda e: e["gate"].update(mode="maybe"), "gate.mode: Input should be 'enabled', 'dry-run'"),
        (lambda e: e["lineage"]["tables"]["train"].pop("version"), "tables.train.version: Field required"),
    ],
)  # fmt: skip
def test_a_malformed_evaluation_is_refused_by_name(tmp_path, change, message) -> None:
    record = evaluation("m", "r")
    change(record)
    with pytest.raises(InputError, match=rf"e.json: not an evaluation record \(.*{message}"):
        read_evaluation(write_json(tmp_path / "e.json", record))
