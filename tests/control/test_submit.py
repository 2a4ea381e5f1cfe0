"""`simrec submit` against a local stub of the KFP API."""

import os

import pytest
from control_helpers import simrec
from kfp_stub import KfpStub

import simrec as package
from simrec.infra.code_version import git_sha


@pytest.fixture
def kfp_api():
    stub = KfpStub()
    yield stub
    stub.close()


def test_submit_creates_a_run_with_the_pipeline_and_git_sha(kfp_api) -> None:
    result = simrec("submit", "--host", kfp_api.url, "--experiment", "nightly", "--param", "source=/data/fm")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("GET", "/apis/v2beta1/healthz") in kfp_api.requests
    assert [e["display_name"] for e in kfp_api.experiments] == ["nightly"]
    (run,) = kfp_api.runs
    assert run["experiment_id"] == kfp_api.experiments[0]["experiment_id"]
    spec = run["pipeline_spec"]["pipeline_spec"]  # with kubernetes settings, the platform spec travels too
    assert spec["pipelineInfo"]["name"] == "simrec"
    assert (
        "exec-ingest"
        in run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    )
    executor = spec["deploymentSpec"]["executors"]["exec-ingest"]["container"]
    assert executor["image"] == f"simrec/steps:{package.__version__}"
    parameters = run["runtime_config"]["parameters"]
    assert parameters["source"] == "/data/fm"
    assert parameters["lake_uri"] == "s3a://simrec/lake"  # the full profile's value
    assert parameters["git_sha"] == git_sha()
    assert run["display_name"].startswith(f"simrec-{git_sha()[:12]}-")
    assert run["run_id"] in result.stdout
    assert set(kfp_api.authorizations) == {None}  # no token configured: no credentials sent


def test_submit_sends_the_token_from_the_environment(kfp_api) -> None:
    """CI passes the endpoint's token as SIMREC_KFP_TOKEN (a repository secret), never as an argument."""
    env = dict(os.environ, SIMREC_KFP_TOKEN="token-from-a-secret")
    result = simrec("submit", "--host", kfp_api.url, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(kfp_api.runs) == 1
    assert kfp_api.authorizations and set(kfp_api.authorizations) == {"Bearer token-from-a-secret"}
    assert "token-from-a-secret" not in result.stdout + result.stderr


def test_submit_schedule_creates_a_recurring_run(kfp_api) -> None:
    result = simrec("submit", "--host", kfp_api.url, "--schedule", "0 3 * * *")
    assert result.returncode == 0, result.stdout + result.stderr
    (job,) = kfp_api.recurring_runs
    assert job["trigger"]["cron_schedule"]["cron"] == "0 3 * * *"
    assert job["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "simrec"
    assert job["runtime_config"]["parameters"]["git_sha"] == git_sha()
    assert not kfp_api.runs


def test_submit_refuses_malformed_parameters(kfp_api) -> None:
    result = simrec("submit", "--host", kfp_api.url, "--param", "no-equals-sign")
    assert result.returncode != 0
    assert "--param takes NAME=VALUE" in result.stderr
    assert not kfp_api.runs


def test_multi_user_kubeflow_needs_the_profile_namespace() -> None:
    """Finding 5 of the cluster day-one review: multi-user KFP refuses an experiment without a namespace."""
    stub = KfpStub(multi_user=True)
    try:
        refused = simrec("submit", "--host", stub.url)
        assert refused.returncode == 1
        assert "multi-user Kubeflow: give --namespace" in refused.stderr
        assert stub.experiments == [] and stub.runs == []
        result = simrec("submit", "--host", stub.url, "--namespace", "team-vision")
        assert result.returncode == 0, result.stdout + result.stderr
        (experiment,) = stub.experiments
        assert experiment["namespace"] == "team-vision"
        (run,) = stub.runs
        assert run["experiment_id"] == experiment["experiment_id"]
    finally:
        stub.close()
