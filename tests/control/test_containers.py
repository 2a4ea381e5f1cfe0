"""The images built here with podman (scripts/build-images --local-base) and `simrec run --containers`:
each step in its own image, as in a pod.

The container tests need podman set up by scripts/setup-containers (scripts/setup runs it where it can
work); the option tests below them need nothing."""

import json
import os
import shutil
import subprocess
import tomllib

import pytest
import requests
from control_helpers import CHECKOUT, simrec

from simrec.infra.errors import InputError
from simrec.runner import containers
from simrec.runner.containers import ContainerMode, LocalImage

VERSION = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["version"]
IMAGES = ("control", "steps", "serve")
CHECK = subprocess.run(
    [str(CHECKOUT / "scripts" / "setup-containers"), "--check"], capture_output=True, text=True, timeout=60
)
needs_podman = pytest.mark.skipif(CHECK.returncode != 0, reason=CHECK.stderr.strip() or "no podman")


def podman(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args],
        env=containers.engine_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def local_images() -> dict[str, str]:
    """The three images, built (or found in the layer cache) once per session, as a user builds them."""
    result = subprocess.run(
        [str(CHECKOUT / "scripts" / "build-images"), "--local-base", *IMAGES],
        capture_output=True,
        text=True,
        timeout=5400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sizes = [line for line in result.stderr.splitlines() if ": built in" in line]
    print("\n".join(sizes))  # build times and sizes (pytest -rP)
    return {name: f"localhost/simrec/{name}:{VERSION}-local" for name in IMAGES}


@needs_podman
@pytest.mark.parametrize("name", IMAGES)
def test_image_runs_simrec_as_uid_1000(local_images, name) -> None:
    image = local_images[name]
    helped = podman("run", "--rm", "--network=none", image, "--help")  # the entrypoint is simrec
    assert helped.returncode == 0 and "usage: simrec" in helped.stdout, helped.stdout + helped.stderr
    whoami = podman("run", "--rm", "--network=none", "--entrypoint=id", image, "-u")
    assert whoami.stdout.strip() == "1000", whoami.stdout + whoami.stderr
    # the mark that keeps a local build from passing for the release
    (details,) = json.loads(podman("image", "inspect", image).stdout)
    assert details["Config"]["Labels"]["org.opencontainers.image.version"] == f"{VERSION}-local"


@needs_podman
def test_serve_image_stays_within_its_size_target(local_images) -> None:
    """A KServe replica started on demand pulls this image: at most 500 MB as built here (issue #23;
    images/README.md says what it holds and what was left out)."""
    size = int(podman("image", "inspect", "--format", "{{.Size}}", local_images["serve"]).stdout)
    assert size <= 500e6, f"the serve image is {size / 1e6:.0f} MB"


@needs_podman
@pytest.mark.parametrize("name", IMAGES)
def test_no_secrets_in_layers(local_images, name) -> None:
    """Nothing a layer's command set, and no credential file, in the image."""
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", local_images[name]).stdout
    for word in ("TOKEN=", "PASSWORD", "SECRET", "AWS_ACCESS_KEY"):
        assert word not in history.upper(), f"{word} in a layer's command:\n{history}"
    (details,) = json.loads(podman("image", "inspect", local_images[name]).stdout)
    assert not [e for e in details["Config"]["Env"] if any(w in e.upper() for w in ("TOKEN", "PASSWORD"))]
    # Files a credential or a developer's state would be kept in; Python's own libraries are left out
    # (their token.py and tokenize.py are modules, not tokens).
    found = podman(
        "run", "--rm", "--network=none", "--user=0", "--entrypoint=sh", local_images[name], "-c",
        "find / -xdev \\( -path /proc -o -path /sys -o -path '/usr/lib/python3*' -o -path /opt/simrec/lib \\)"
        " -prune -o \\( -name token -o -name admin-token -o -name .netrc -o -name 'id_rsa*' -o -name '*.key'"
        " -o -name .git -o -name .envs -o -name .simrec -o -name mlflow.db -o -name server.json"
        " -o -name .docker -o -name '.git-credentials' \\) -print",
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert not found.stdout.split(), found.stdout


@needs_podman
def test_a_broken_dockerfile_fails_the_build(tmp_path, local_images) -> None:
    """A change that drops the lock file it installs fails at that step, not in a pod later."""
    shutil.copytree(CHECKOUT / "images", tmp_path / "images")
    (tmp_path / "images" / "serve" / "requirements.txt").unlink()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, tmp_path / name)
    (tmp_path / "src").mkdir()
    base = subprocess.run(
        [str(CHECKOUT / "scripts" / "setup-containers")], capture_output=True, text=True, timeout=900
    ).stdout.split()[-1]
    built = podman(
        "build", "--format", "docker", "--pull=never", "--build-arg", f"BASE={base}",
        "-f", str(tmp_path / "images" / "serve" / "Dockerfile"), "-t", "simrec-broken:test", str(tmp_path),
    )  # fmt: skip
    assert built.returncode != 0
    assert "requirements.txt" in built.stderr and "no such file" in built.stderr.lower(), built.stderr


@needs_podman
def test_run_in_containers_trains_serves_and_records_images(
    smoke_env, tmp_path, local_images, request
) -> None:
    """The smoke profile end to end with every task in its image; the deploy step starts the server from
    the serve image, and it answers a v2 inference."""
    run = simrec("run", "--containers", "--profile", "smoke", "--run-name", "boxed", env=smoke_env)
    assert run.returncode == 0, run.stdout + run.stderr
    print(run.stdout)
    tasks = {
        t["name"]: t for t in json.loads((tmp_path / "runs" / "boxed" / "run.json").read_text())["tasks"]
    }
    for name, task in tasks.items():
        expected = local_images["serve" if name == "validate" else "steps"]
        assert task["status"] == "succeeded" and task["image"] == expected, task
        (details,) = json.loads(podman("image", "inspect", expected).stdout)
        assert task["image_id"] == details["Id"]
        assert f"{name}: running in image {expected} ({details['Id'][:12]})" in run.stdout
    # Written by the image's user (uid 1000; rootless, the user who ran simrec), readable afterwards.
    model = tmp_path / "runs" / "boxed" / "train" / "model" / "training.json"
    assert model.stat().st_uid == (1000 if os.geteuid() == 0 else os.geteuid())
    assert json.loads(model.read_text())["history"]
    server = json.loads((tmp_path / "serve" / "server.json").read_text())
    # The server outlives the run by design (deploy starts it detached): this test's goes with the test.
    request.addfinalizer(lambda: podman("rm", "--force", server["container"]))
    assert server["image"] == local_images["serve"]
    state = json.loads(podman("inspect", "--format", "{{json .State}}", server["container"]).stdout)
    assert state["Running"], state
    token = (tmp_path / "serve" / "token").read_text().strip()
    pixels = {"name": "pixels", "shape": [1, 28, 28], "datatype": "UINT8", "data": [200] * 28 * 28}
    answer = requests.post(
        f"{server['url']}/v2/models/simrec/infer",
        json={
            "inputs": [pixels],
            "parameters": {"k": 3},
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["item_id"]["shape"] == [1, 3] and answer.json()["model_version"] == "1"
    # a second run finds every task cached: the image IDs are in the keys, unchanged
    again = simrec("run", "--containers", "--profile", "smoke", "--run-name", "boxed-again", env=smoke_env)
    assert again.returncode == 0, again.stdout + again.stderr
    for name in ("tune", "train", "evaluate", "validate"):
        assert f"{name:<12} cached" in again.stdout, again.stdout


@needs_podman
def test_an_image_that_cannot_be_built_stops_the_run_with_the_reason() -> None:
    with pytest.raises(
        InputError, match=r"(?s)building simrec/steps-cuda failed:.*no local build of 'steps-cuda'"
    ):
        containers.build_local("steps-cuda", echo=print)


@needs_podman
def test_a_missing_image_is_named_with_how_to_build_it() -> None:
    with pytest.raises(
        InputError, match=r"simrec/nothing:9.9 is not on this machine .* --local-base nothing"
    ):
        containers.resolve_image("simrec/nothing:9.9")


# --- the podman options, from the IR -----------------------------------------------------------------


def test_local_build_tag_and_image_names() -> None:
    assert (
        containers.local_build("registry.example/ml/simrec/steps:0.1.0")
        == "localhost/simrec/steps:0.1.0-local"
    )
    assert containers.image_name("registry.example/ml/simrec/serve:0.1.0@sha256:ab") == "serve"


def test_shared_folders_are_the_fewest_covering_ones(tmp_path) -> None:
    inner, outer = tmp_path / "a" / "lake", tmp_path / "a"
    assert containers.mount_roots([inner, outer, tmp_path / "b"]) == [outer, tmp_path / "b"]


def test_a_task_gets_the_pods_limits_env_and_folders(tmp_path) -> None:
    image = LocalImage("simrec/steps:0.1.0", "localhost/simrec/steps:0.1.0-local", "f" * 64, "1000", 0.0)
    mode = ContainerMode(writable=[tmp_path / "runs"], read_only=[tmp_path])
    container = {"resources": {"resourceMemoryLimit": "8Gi", "cpuLimit": 64.0}}
    platform = {"emptyDirMounts": [{"mountPath": "/dev/shm", "sizeLimit": "2Gi", "medium": "Memory"}]}
    command = mode.command(
        image, "simrec-x-train", ["simrec", "train", "--epochs", "2"], {"A": "1"}, container, platform
    )
    assert f"--memory={8 * 2**30}" in command
    cpus = next(option for option in command if option.startswith("--cpus="))
    assert float(cpus.split("=")[1]) <= 64  # never more than this machine has
    assert f"--shm-size={2 * 2**30}" in command
    assert f"--volume={tmp_path / 'runs'}:{tmp_path / 'runs'}" in command
    assert f"--volume={tmp_path}:{tmp_path}:ro" in command
    assert "--env=A=1" in command and "--user=1000:1000" in command and "--pull=never" in command
    if os.geteuid() == 0:  # handed to the image's user, as Kubernetes' fsGroup does for a pod
        assert (tmp_path / "runs").stat().st_uid == 1000
    assert command[-4:] == ["localhost/simrec/steps:0.1.0-local", "train", "--epochs", "2"]
    assert "--entrypoint=simrec" in command


def test_without_podman_container_mode_says_how_to_get_it(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InputError, match="container mode needs podman: run scripts/setup-containers"):
        containers.find_image("simrec/steps:0.1.0")
