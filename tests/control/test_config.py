from pathlib import Path

import pytest

from simrec.config import ConfigError, load_config


def test_profiles_overlay_base(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    embedded, smoke, full = (load_config(p, environ={}) for p in ("embedded", "smoke", "full"))
    assert embedded.storage.lake_uri == str(tmp_path / ".simrec" / "lake")  # relative -> from cwd
    assert embedded.storage.mlflow_tracking_uri == f"sqlite:///{tmp_path}/.simrec/mlflow.db"
    assert embedded.ingest.checksums == "official"
    assert smoke.ingest.checksums == "none" and smoke.spark.driver_memory == "2g"
    assert full.storage.lake_uri == "s3a://simrec/lake"


def test_environment_overrides_win() -> None:
    config = load_config("embedded", environ={"SIMREC__INGEST__SOURCE": "http://mirror/fm/", "OTHER": "x"})
    assert config.ingest.source == "http://mirror/fm/"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SIMREC__INGEST__SOURCES": "/x"}, r"ingest.sources: Extra inputs are not permitted"),
        ({"SIMREC__SPARK": "local"}, r"spark: Input should be a valid dictionary"),
        ({"SIMREC__INGEST____SOURCE": "/x"}, r"empty key segment"),
        (
            {"SIMREC__TUNE__SPACE": "{dropout: {dist: uniform, low: 0.5, high: 0.1}}"},
            r"tune.space: dropout: .*low",
        ),
        (
            {"SIMREC__TUNE__SPACE": "{colour: {dist: choice, options: [red]}}"},
            r"unknown hyperparameter 'colour'",
        ),
        ({"SIMREC__EVALUATE__INDEX__KIND": "annoy"}, r"evaluate.index.kind: Input should be 'hnsw', 'exact'"),
        (
            {"SIMREC__EVALUATE__INDEX__NPROBE": "0"},
            r"evaluate.index.nprobe: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_overrides_are_named(environ, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("embedded", environ=environ)


K8S = "k8s://https://kubernetes.default.svc"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"SIMREC__SPARK__MASTER": K8S},
            r"needs spark.kubernetes.executor_image, spark.kubernetes.executor_instances, "
            r"spark.kubernetes.checkpoint_pvc, spark.kubernetes.executor_gpus",
        ),
        (
            {
                "SIMREC__SPARK__MASTER": K8S,
                "SIMREC__SPARK__KUBERNETES__EXECUTOR_IMAGE": "steps:1",
                "SIMREC__SPARK__KUBERNETES__EXECUTOR_INSTANCES": "2",
                "SIMREC__SPARK__KUBERNETES__EXECUTOR_GPUS": "1",
                "SIMREC__SPARK__KUBERNETES__CHECKPOINT_PVC": "rwx",
            },
            r"train.workers 4 ranks need one GPU each; executors offer 2 x 1",
        ),
        ({"SIMREC__SPARK__KUBERNETES__EXECUTOR_IMAGE": "steps:1"}, r"spark.master is 'local\[\*\]', not k8s"),
        ({"SIMREC__SPARK__MASTER": "local[2]"}, r"train.workers 4 needs as many Spark task slots"),
        (
            {"SIMREC__RESOURCES__TRAIN__CPU_LIMIT": "2"},
            r"resources.train: .*cpu_request 8 is above cpu_limit 2",
        ),
        (
            {"SIMREC__RESOURCES__TUNE__MEMORY_LIMIT": "lots"},
            r"resources.tune.memory_limit: .*not a memory quantity",
        ),
        ({"SIMREC__RESOURCES__TRAINING__CPU_LIMIT": "2"}, r"unknown task\(s\) \['training'\]"),
        (
            {"SIMREC__SPARK__MASTER": "yarn"},
            r"spark.master: .*expected local, local\[\*\], local\[N\] or k8s://URL",
        ),
    ],
)
def test_half_configured_cluster_shapes_are_refused(environ, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("full", environ=environ)


def test_complete_multi_node_shape_loads() -> None:
    config = load_config(
        "full",
        environ={
            "SIMREC__SPARK__MASTER": K8S,
            "SIMREC__SPARK__KUBERNETES__EXECUTOR_IMAGE": "steps:1",
            "SIMREC__SPARK__KUBERNETES__EXECUTOR_INSTANCES": "4",
            "SIMREC__SPARK__KUBERNETES__EXECUTOR_GPUS": "1",
            "SIMREC__SPARK__KUBERNETES__CHECKPOINT_PVC": "rwx",
        },
    )
    assert config.spark.on_kubernetes and config.spark.kubernetes.executor_gpus == 1


def _conf(tmp_path: Path, base: str, profile: str = "{}") -> Path:
    for name, text in (("base", base), ("smoke", profile)):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "simrec.yaml").write_text(text)
    return tmp_path


def test_bad_files_are_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"base/simrec.yaml: not valid YAML"):
        load_config("smoke", _conf(tmp_path / "a", "storage: [", "{}"), environ={})
    with pytest.raises(ConfigError, match=r"base/simrec.yaml: the top level must be a mapping, not list"):
        load_config("smoke", _conf(tmp_path / "b", "- 1"), environ={})
    with pytest.raises(ConfigError, match=r"storage: Field required"):
        load_config("smoke", _conf(tmp_path / "c", "ingest: {source: /x}"), environ={})
    with pytest.raises(ConfigError, match=r"unknown profile 'prod'"):
        load_config("prod", environ={})
    with pytest.raises(ConfigError, match=r"full/simrec.yaml: configuration file not found"):
        load_config("full", tmp_path / "c", environ={})


def test_the_vector_engine_is_off_in_every_profile_and_checked_when_set() -> None:
    for profile in ("smoke", "embedded", "full"):
        assert load_config(profile, environ={}).evaluate.vector_engine is None
    environ = {"SIMREC__EVALUATE__VECTOR_ENGINE__URI": "http://milvus.milvus:19530"}
    engine = load_config("embedded", environ=environ).evaluate.vector_engine
    assert (engine.uri, engine.alias, engine.token_secret) == ("http://milvus.milvus:19530", "simrec", None)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"ALIAS": "shop-items"}, r"evaluate.vector_engine.alias: String should match pattern"),
        ({"ALIAS": "1shop"}, r"evaluate.vector_engine.alias: String should match pattern"),
        ({"URI": '""'}, r"evaluate.vector_engine.uri: String should have at least 1 character"),
        ({"URI": "http://root:Milvus@milvus:19530"}, r"evaluate.vector_engine.uri: .*carries credentials"),
        ({"TOKEN_SECRET": "Milvus Token"}, r"evaluate.vector_engine.token_secret: String should match"),
        ({"PORT": "19530"}, r"evaluate.vector_engine.port: Extra inputs are not permitted"),
    ],
)
def test_bad_vector_engine_settings_are_named(settings, message) -> None:
    environ = {"SIMREC__EVALUATE__VECTOR_ENGINE__URI": "http://milvus.milvus:19530"}
    environ |= {f"SIMREC__EVALUATE__VECTOR_ENGINE__{key}": value for key, value in settings.items()}
    with pytest.raises(ConfigError, match=message):
        load_config("embedded", environ=environ)
