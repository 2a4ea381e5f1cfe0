"""`simrec run`, the README's main command, end to end on generated data (smoke profile)."""

import json
import shutil
from pathlib import Path

import requests
import yaml
from control_helpers import CHECKOUT, simrec


def _lineage(run_dir: Path) -> dict:
    """Ingest's lineage: an output parameter (recorded in run.json), not an artifact."""
    tasks = {t["name"]: t for t in json.loads((run_dir / "run.json").read_text())["tasks"]}
    return tasks["ingest"]["parameters"]["lineage"]


def _assert_quiet(stdout: str) -> None:
    """What a newcomer sees: progress and results, not Ivy, Spark, TensorFlow or Horovod chatter."""
    for noise in ("ivy", "WARN", "cuDNN", "rendezvous", "Traceback", "INFO"):
        assert noise not in stdout, f"{noise!r} in the quiet output:\n{stdout}"
    assert len(stdout.splitlines()) < 60, stdout


def test_run_trains_and_a_second_run_skips_unchanged_tasks(smoke_env, tmp_path) -> None:
    first = simrec("run", "--profile", "smoke", "--run-name", "one", env=smoke_env)
    assert first.returncode == 0, first.stdout + first.stderr
    print(f"first run:\n{first.stdout}")  # pytest -rP shows it
    _assert_quiet(first.stdout)
    for progress in (
        "  ingest | tables train v0 (200 rows), test v0 (50 rows)",
        "  tune | 2 trials (0 failed, 0 killed)",
        "  train | epoch 1/2: loss",
        "  train | epoch 2/2: loss",
        "  train | trained 2 epochs",
        "  evaluate | recall@1",
        "  validate | validated",
        "  register | registered",
        "  deploy | serving:",
    ):
        assert progress in first.stdout, f"{progress!r} missing from:\n{first.stdout}"
    assert "epoch 1/2" in (tmp_path / "runs" / "one" / "train" / "log.txt").read_text()
    assert "ingest       succeeded" in first.stdout
    assert "tune         succeeded" in first.stdout
    assert "train        succeeded" in first.stdout
    assert "evaluate     succeeded" in first.stdout
    evaluation = json.loads((tmp_path / "runs" / "one" / "evaluate" / "evaluation").read_text())
    assert evaluation["gate"]["blessed"] is True  # the smoke profile's minimum is 0
    assert 0.5 < evaluation["metrics"]["recall_at_1"] <= 1.0  # 10 distinct generated patterns
    assert (tmp_path / "runs" / "one" / "evaluate" / "package" / "index.faiss").exists()
    assert "<h2>similar items</h2>" in (tmp_path / "runs" / "one" / "evaluate" / "report").read_text()
    executor_output = json.loads(
        (tmp_path / "runs" / "one" / "evaluate" / "executor_output.json").read_text()
    )
    published = executor_output["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert published["recall_at_1"] == evaluation["metrics"]["recall_at_1"]
    assert "validate     succeeded" in first.stdout
    registered = json.loads((tmp_path / "runs" / "one" / "register" / "registered").read_text())
    assert (registered["version"], registered["aliases"]) == (1, ["challenger", "champion"])
    assert registered["pipeline_run_id"] == "one"  # what the pod's Workflow label gives on a cluster
    deployed = json.loads((tmp_path / "runs" / "one" / "deploy" / "result").read_text())
    assert deployed["outcome"] == "serving" and deployed["serving"]["version"] == "1"
    # the local server outlives the run and answers with the champion
    server = json.loads((tmp_path / "serve" / "server.json").read_text())
    token = (tmp_path / "serve" / "token").read_text().strip()
    answer = requests.post(
        f"{server['url']}/similar",
        json={"item_id": "test-000000", "k": 3},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()
    assert answer["model_version"] == "1" and len(answer["items"]) == 3
    tuning = json.loads((tmp_path / "runs" / "one" / "tune" / "summary").read_text())
    assert (tuning["trials"], tuning["parallelism"]) == (2, 2)  # the smoke profile's search
    best = json.loads((tmp_path / "runs" / "one" / "tune" / "best_params").read_text())
    model_dir = tmp_path / "runs" / "one" / "train" / "model"
    summary = json.loads((model_dir / "training.json").read_text())
    assert [h["epoch"] for h in summary["history"]] == [1, 2]  # the smoke profile's epochs
    assert summary["table"]["version"] == 0
    assert {k: summary["params"][k] for k in best} == best  # train used tune's best parameters
    assert (model_dir / "embedding.keras").exists()
    # one folder per training content (a retried pod finds it again), not per run
    (checkpoints,) = (tmp_path / "checkpoints").glob("train-*")
    assert (checkpoints / "history.json").exists()
    assert f"run folder: {tmp_path / 'runs' / 'one'}" in first.stdout
    lineage = _lineage(tmp_path / "runs" / "one")
    assert {t: (s["version"], s["rows"]) for t, s in lineage["tables"].items()} == {
        "train": (0, 200),
        "test": (0, 50),
    }
    assert (tmp_path / "lake" / "train" / "_delta_log" / "00000000000000000000.json").exists()
    second = simrec("run", "--profile", "smoke", "--run-name", "two", env=smoke_env)
    assert second.returncode == 0, second.stdout + second.stderr
    print(f"second run:\n{second.stdout}")
    _assert_quiet(second.stdout)
    assert _lineage(tmp_path / "runs" / "two") == lineage  # same versions: nothing was rewritten
    assert not (tmp_path / "lake" / "train" / "_delta_log" / "00000000000000000001.json").exists()
    assert "tune         cached" in second.stdout
    assert "train        cached" in second.stdout
    assert "evaluate     cached" in second.stdout
    assert "validate     cached" in second.stdout
    again = json.loads((tmp_path / "runs" / "two" / "register" / "registered").read_text())
    assert again["version"] == 1 and again["decision"].startswith("already registered")
    assert json.loads((tmp_path / "runs" / "two" / "deploy" / "result").read_text())["outcome"] == "unchanged"
    assert not (tmp_path / "runs" / "two" / "train").exists()

    # An engineer edits a default in a component's YAML: the next run uses it, from that step on (KFP's
    # cache key holds the container's arguments), and the steps before stay cached.
    edited = tmp_path / "components"
    shutil.copytree(CHECKOUT / "components", edited)
    evaluate_yaml = edited / "evaluate" / "component.yaml"
    spec = yaml.safe_load(evaluate_yaml.read_text())
    (ef_search,) = [i for i in spec["inputs"] if i["name"] == "index_ef_search"]
    ef_search["default"] = 48
    evaluate_yaml.write_text(yaml.safe_dump(spec, sort_keys=False))
    third = simrec(
        "run", "--profile", "smoke", "--components-dir", str(edited), "--run-name", "three", env=smoke_env
    )
    assert third.returncode == 0, third.stdout + third.stderr
    assert "train        cached" in third.stdout and "evaluate     succeeded" in third.stdout
    manifest = json.loads(
        (tmp_path / "runs" / "three" / "evaluate" / "package" / "recommender.json").read_text()
    )
    assert manifest["index"]["ef_search"] == 48


def test_failed_step_fails_the_run_with_its_error(smoke_env, tmp_path) -> None:
    env = smoke_env | {"SIMREC__INGEST__SOURCE": str(tmp_path / "nowhere")}
    result = simrec("run", "--profile", "smoke", "--run-name", "bad", env=env)
    assert result.returncode == 1
    assert "ingest       failed" in result.stdout
    assert "tune         skipped" in result.stdout
    assert "train        skipped" in result.stdout
    assert "evaluate     skipped" in result.stdout
    assert "register     skipped" in result.stdout
    assert "train-images-idx3-ubyte.gz: file not found" in result.stdout
    assert "Ivy" not in result.stdout  # the step's one-line error is enough


def test_bad_configuration_is_one_clear_line(smoke_env) -> None:
    result = simrec("run", "--profile", "smoke", env=smoke_env | {"SIMREC__SPARK__CORES": "4"})
    assert result.returncode != 0
    assert (
        "invalid configuration" in result.stderr
        and "spark.cores: Extra inputs are not permitted" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_a_used_run_name_is_one_clear_line(smoke_env, tmp_path) -> None:
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    result = simrec("run", "--profile", "smoke", "--run-name", "taken", env=smoke_env)
    assert result.returncode != 0
    assert f"run name 'taken' is already used ({tmp_path / 'runs' / 'taken'})" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "taken" / "pipeline.yaml").exists()
