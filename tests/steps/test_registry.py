"""registry look-ups and `simrec lineage` on bad references: one clear line, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from simrec.cli import main as simrec
from simrec.infra.errors import InputError
from simrec.registry import models as registry


def _two_versions() -> None:
    client = registry.client()
    client.create_registered_model("simrec")
    for _ in range(2):
        client.create_model_version("simrec", source="/nowhere")
    client.set_registered_model_alias("simrec", "champion", "1")
    client.set_registered_model_alias("simrec", "challenger", "2")


@pytest.fixture(scope="module")
def two_versions_store(tmp_path_factory) -> Iterator[str]:
    """One store for the read-only tests (a new sqlite store costs seconds of migrations): registered
    model `simrec` with versions 1 (champion) and 2 (challenger); no files needed."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    _two_versions()
    yield uri
    mlflow.set_tracking_uri(previous)


@pytest.fixture
def two_versions(two_versions_store, monkeypatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", two_versions_store)
    mlflow.set_tracking_uri(two_versions_store)


@pytest.mark.parametrize("ref", ["simrec@champion", "models:/simrec@champion", "simrec/1", " simrec/1 "])
def test_resolve_finds_a_version_by_alias_or_number(two_versions, ref) -> None:
    version = registry.resolve(ref)
    assert (version.name, str(version.version)) == ("simrec", "1")
    assert registry.resolve("simrec@challenger").version in (2, "2")


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("simrec", "expected NAME@ALIAS or NAME/VERSION"),
        ("simrec@", "expected NAME@ALIAS or NAME/VERSION"),
        ("simrec/0", "expected NAME@ALIAS or NAME/VERSION"),
        ("simrec/latest", "expected NAME@ALIAS or NAME/VERSION"),
        ("@champion", "expected NAME@ALIAS or NAME/VERSION"),
        ("sim rec@champion", "expected NAME@ALIAS or NAME/VERSION"),
        ("simrec@champion/1", "expected NAME@ALIAS or NAME/VERSION"),
        ("other@champion", "no registered model 'other' in sqlite:///"),
        ("simrec@production", r"has no alias 'production' \(aliases: challenger \(v2\), champion \(v1\)\)"),
        ("simrec/9", r"model 'simrec' has no version 9 \(latest: 2\)"),
    ],
)
def test_bad_references_are_clear_errors(two_versions, ref, message) -> None:
    with pytest.raises(InputError, match=message):
        registry.resolve(ref)


def test_champion_is_none_until_there_is_one(tracking) -> None:
    assert registry.champion("simrec") is None  # no such model yet: the first run has no champion
    registry.client().create_registered_model("simrec")
    registry.client().create_model_version("simrec", source="/nowhere")
    assert registry.champion("simrec") is None  # a model, but nothing promoted
    registry.client().set_registered_model_alias("simrec", "champion", "1")
    assert str(registry.champion("simrec").version) == "1"


def test_lineage_command_reports_a_bad_reference_in_one_line(two_versions) -> None:
    with pytest.raises(SystemExit) as exit_info:
        simrec(["lineage", "simrec/9"])
    assert exit_info.value.code == "simrec lineage: error: model 'simrec' has no version 9 (latest: 2)"


def test_download_package_refuses_a_model_without_a_package(tracking, tmp_path) -> None:
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "notes.txt").write_text("hello")
    registry.client().create_registered_model("simrec")
    version = registry.client().create_model_version("simrec", source=str(tmp_path / "not-a-model"))
    with pytest.raises(InputError, match="not-a-model: not an MLflow model"):
        registry.download_package(version, tmp_path / "download")


def test_deploying_an_alias_that_does_not_exist_yet_is_a_no_op(tracking, tmp_path, capsys) -> None:
    """The pipeline's first run with a dry-run gate (or an unblessed model) has no champion to serve."""
    from simrec.steps.deploy import deploy_main

    result = tmp_path / "result.json"
    deploy_main(["simrec@champion", "--state-dir", str(tmp_path / "serve"), "--result-out", str(result)])
    assert json.loads(result.read_text()) == {
        "outcome": "nothing to deploy",
        "reason": "simrec has no champion yet",
    }
    assert not (tmp_path / "serve" / "server.json").exists()  # no server was started for nothing
    with pytest.raises(InputError, match="no registered model 'simrec'"):
        deploy_main(["simrec/3", "--state-dir", str(tmp_path / "serve")])  # a version by hand must exist
