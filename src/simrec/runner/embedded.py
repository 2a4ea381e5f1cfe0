"""The embedded runner: executes a compiled pipeline (KFP IR) on this machine.

Each task's container command, from the same component YAML the cluster runs, is started as a local
process in the local environment that stands for its image (`simrec/steps:…` -> .envs/steps).
Placeholders resolve as the KFP backend's launcher resolves them (simrec.runner.placeholders: plain
substitution, Go's formatting of values), not with kfp.local's more forgiving rules, so a command means
here what it means in a pod; constructs the backend would not execute are refused when the pipeline is
compiled (simrec.pipeline.backend).

Caching follows KFP's backend (cacheutils GenerateCacheKey), so a run is cached here exactly when it would
be on a cluster: the key holds the task's container (image, command, args) and component spec (output
definitions), its input *parameters by value*, and its input *artifacts by identity*: producer task,
output name and the producing execution (a cached task hands on the execution it reused), never their
content. An artifact re-made by a task that ran again is a new artifact, so its consumers run again, as
on KFP where every execution's outputs get new names. Data identity that must survive a re-run (ingest's
table versions) therefore travels as a parameter. One addition: an image tag does not change when its
lock file does here, so the lock's content (images/<image>/requirements.txt) is part of the key.

With containers (`simrec run --containers`, simrec.runner.containers) each command runs in its image
instead, and the image's ID takes the lock's place in the key: it covers the lock and the code alike.

About 380 lines: the DAG walk, the cache key and the task's execution record are one contract with KFP's
backend, kept together so that it can be read against cacheutils and the driver side by side."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from kfp import dsl
from kfp.local import executor_input_utils
from kfp.pipeline_spec import pipeline_spec_pb2

from simrec.infra import paths
from simrec.infra.errors import InputError
from simrec.infra.files import write_json_atomic
from simrec.infra.progress import progress_text
from simrec.registry.tracking import PIPELINE_RUN_ENV
from simrec.runner import containers
from simrec.runner.containers import ContainerMode, LocalImage, image_name
from simrec.runner.ir import PipelineIR, Task
from simrec.runner.placeholders import substitute


@dataclass
class TaskRecord:
    name: str
    status: str  # succeeded | cached | failed | skipped
    seconds: float = 0.0
    root: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)  # output name -> local path
    parameters: dict[str, Any] = field(default_factory=dict)  # output name -> value
    error: str = ""
    image: str = ""  # container mode: the image that ran (the IR's, or its local build)
    image_id: str = ""


@dataclass
class RunSummary:
    run_dir: Path
    tasks: list[TaskRecord]

    @property
    def succeeded(self) -> bool:
        return all(t.status in ("succeeded", "cached") for t in self.tasks)


TAIL_LINES = 30  # of a failed task's log, shown in quiet mode
STEP_ERROR = re.compile(r"^simrec [\w-]+: error: ")  # how the simrec command reports bad input


class TaskFailed(RuntimeError):
    pass


def environment_for(image: str, envs_dir: Path) -> Path:
    """The local environment standing for an image: `registry/simrec/steps:0.1.0` -> envs_dir/steps."""
    name = image_name(image)
    env = envs_dir / name
    if not (env / "bin" / "python").exists():
        raise InputError(
            f"no local environment for image {image}: {env} is missing (run scripts/setup-envs {name})"
        )
    return env


def _lock_digest(image: str, images_dir: Path) -> str:
    lock = images_dir / image_name(image) / "requirements.txt"
    return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else "no lock file"


_PARAMETER_PARSERS: dict[str, Callable[[str], Any]] = {
    "STRING": str,
    "NUMBER_INTEGER": int,
    "NUMBER_DOUBLE": float,
    "BOOLEAN": lambda text: json.loads(text.lower()),
    "LIST": json.loads,
    "STRUCT": json.loads,
}


class EmbeddedRunner:
    def __init__(
        self,
        envs_dir: Path,
        runs_dir: Path,
        step_env: dict[str, str] | None = None,
        echo: Callable[[str], None] = print,
        images_dir: Path | None = None,
        verbose: bool = False,
        containers: ContainerMode | None = None,
    ) -> None:
        self.envs_dir = envs_dir
        self.runs_dir = runs_dir
        self.cache_dir = runs_dir / "cache"
        self.step_env = step_env or {}
        self.echo = echo
        self.images_dir = images_dir or paths.images_dir()
        self.verbose = verbose  # every line of step output; otherwise progress lines only
        self.containers = containers  # None: local environments stand for the images
        self.images: dict[str, LocalImage] = {}  # container mode: IR reference -> the image that runs
        self.engine: Path | None = None  # container mode: the engine API socket the deploy step uses

    def run(self, ir: PipelineIR, arguments: dict[str, Any], run_name: str | None = None) -> RunSummary:
        unknown = set(arguments) - set(ir.parameters)
        if unknown:
            raise InputError(f"unknown pipeline parameter(s): {', '.join(sorted(unknown))}")
        parameters = ir.parameters | arguments
        missing = [name for name, value in parameters.items() if value is None]
        if missing:
            raise InputError(f"pipeline parameter(s) without a value: {', '.join(sorted(missing))}")
        run_name = run_name or f"{ir.name}-{datetime.now():%Y%m%d-%H%M%S}"
        run_dir = self.runs_dir / run_name
        if any((run_dir / task.name).exists() for task in ir.tasks) or (run_dir / "run.json").exists():
            raise InputError(f"run name {run_name!r} is already used ({run_dir}); choose another --run-name")
        run_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            if self.containers:
                self._find_images(ir)
                self.engine = stack.enter_context(containers.engine_socket())
            records = self._run_tasks(ir, parameters, run_dir, run_name)
        summary = RunSummary(run_dir, [records[t.name] for t in ir.tasks])
        write_json_atomic(
            run_dir / "run.json",
            {"pipeline": ir.name, "parameters": parameters, "tasks": [asdict(t) for t in summary.tasks]},
        )
        return summary

    def _find_images(self, ir: PipelineIR) -> None:
        """Every task's image before the first task starts. One that is missing, or older than the code it
        is built from, is built first (scripts/build-images --local-base: only changed layers), so the run
        executes this checkout's code, as a cluster runs the image the IR names."""
        for reference in sorted({task.container["image"] for task in ir.tasks}):
            name = image_name(reference)
            image = containers.find_image(reference)
            changed, newest = containers.newest_source([paths.CHECKOUT / "src", self.images_dir / name])
            if image is None or changed > image.created:
                why = "not built yet" if image is None else f"older than {newest}"
                self.echo(f"image {containers.local_build(reference)}: {why}: building it")
                containers.build_local(name, self.echo)
                image = containers.resolve_image(reference)
            self.images[reference] = image

    def _run_tasks(
        self, ir: PipelineIR, parameters: dict[str, Any], run_dir: Path, run_name: str
    ) -> dict[str, TaskRecord]:
        records: dict[str, TaskRecord] = {}
        for index, task in enumerate(ir.tasks, 1):
            prefix = f"[{index}/{len(ir.tasks)}] {task.name}"
            failed_upstream = sorted(u for u in task.upstream if records[u].status in ("failed", "skipped"))
            if failed_upstream:
                records[task.name] = TaskRecord(
                    task.name, "skipped", error=f"upstream {failed_upstream} failed"
                )
                self.echo(f"{prefix}: skipped ({records[task.name].error})")
                continue
            records[task.name] = self._run_task(task, parameters, records, run_dir, run_name, prefix)
        return records

    def _resolve_inputs(
        self, task: Task, parameters: dict[str, Any], records: dict[str, TaskRecord]
    ) -> dict[str, Any]:
        arguments: dict[str, Any] = {}
        for name, wiring in task.inputs.get("parameters", {}).items():
            if "componentInputParameter" in wiring:
                arguments[name] = parameters[wiring["componentInputParameter"]]
            elif "runtimeValue" in wiring:
                arguments[name] = wiring["runtimeValue"]["constant"]
            elif "taskOutputParameter" in wiring:
                producer = wiring["taskOutputParameter"]
                arguments[name] = records[producer["producerTask"]].parameters[producer["outputParameterKey"]]
            else:
                raise InputError(f"task {task.name}: input {name} has unsupported wiring {wiring}")
        for name, wiring in task.inputs.get("artifacts", {}).items():
            if "taskOutputArtifact" not in wiring:
                raise InputError(f"task {task.name}: input artifact {name} has unsupported wiring {wiring}")
            producer = wiring["taskOutputArtifact"]
            uri = records[producer["producerTask"]].artifacts[producer["outputArtifactKey"]]
            arguments[name] = dsl.Artifact(name=name, uri=uri)
        return arguments

    def _cache_key(self, task: Task, arguments: dict[str, Any], records: dict[str, TaskRecord]) -> str:
        artifacts = {}
        for name, wiring in task.inputs.get("artifacts", {}).items():
            producer = wiring["taskOutputArtifact"]
            artifacts[name] = {
                "producer": producer["producerTask"],
                "output": producer["outputArtifactKey"],
                # the execution that made it: a task's folder, or for a cached task the one it reused
                "execution": records[producer["producerTask"]].root,
            }
        # Process mode keeps its key as it was (caches made before container mode stay valid).
        image = (
            {"image_id": self.images[task.container["image"]].id}
            if self.containers
            else {"image_lock": _lock_digest(task.container["image"], self.images_dir)}
        )
        identity = image | {
            "container": task.container,
            "component": task.component,
            "parameters": {
                name: value
                for name, value in sorted(arguments.items())
                if not isinstance(value, dsl.Artifact)
            },
            "artifacts": artifacts,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()

    def _cached(self, key: str) -> TaskRecord | None:
        entry = self.cache_dir / f"{key}.json"
        if not entry.exists():
            return None
        record = TaskRecord(**json.loads(entry.read_text()))
        if not all(Path(path).exists() for path in record.artifacts.values()):
            return None
        return record

    def _run_task(
        self,
        task: Task,
        parameters: dict[str, Any],
        records: dict[str, TaskRecord],
        run_dir: Path,
        run_name: str,
        prefix: str,
    ) -> TaskRecord:
        arguments = self._resolve_inputs(task, parameters, records)
        key = self._cache_key(task, arguments, records)
        if task.caching and (hit := self._cached(key)):
            self.echo(f"{prefix}: cached (outputs of {hit.root})")
            hit.status, hit.seconds = "cached", 0.0
            return hit
        task_root = run_dir / task.name
        task_root.mkdir(parents=True)
        component = json_format.ParseDict(task.component, pipeline_spec_pb2.ComponentSpec())
        executor_input = executor_input_utils.executor_input_to_dict(
            executor_input_utils.construct_executor_input(
                component, arguments, str(task_root), block_input_artifact=False
            ),
            component,
        )
        command = substitute(task.container["command"] + task.container.get("args", []), executor_input)
        record = TaskRecord(task.name, "failed", root=str(task_root))
        started = time.monotonic()
        try:
            container_env = {item["name"]: item["value"] for item in task.container.get("env", [])}
            # What a pod reads from its labels on a cluster (the IR's platform spec; embedded runs apply none)
            container_env[PIPELINE_RUN_ENV] = run_name
            if self.containers:
                image = self.images[task.container["image"]]
                record.image, record.image_id = image.tag, image.id
                where = f"image {image.tag} ({image.id[:12]})"
                argv = self._container_command(task, image, command, container_env, run_name)
                env = containers.engine_environment()
            else:
                env_dir = environment_for(task.container["image"], self.envs_dir)
                where = f"{env_dir.name} environment"
                argv, env = command, self._process_env(env_dir, container_env)
            if self.verbose:
                shown = " ".join(arg if len(arg) <= 200 else arg[:60] + " … " + arg[-20:] for arg in command)
                self.echo(f"{prefix}: running in {where}: {shown}")
            else:
                self.echo(f"{prefix}: running in {where} (log: {task_root / 'log.txt'})")
            self._execute(argv, env, task_root / "log.txt", task.name)
            record.artifacts, record.parameters = self._collect_outputs(executor_input, task)
            record.status = "succeeded"
        except (TaskFailed, InputError) as exc:
            record.error = str(exc)
        record.seconds = round(time.monotonic() - started, 1)
        if record.status == "succeeded":
            self.echo(f"{prefix}: succeeded in {record.seconds:.1f} s")
            if task.caching:
                write_json_atomic(self.cache_dir / f"{key}.json", asdict(record))
        else:
            self.echo(f"{prefix}: FAILED after {record.seconds:.1f} s: {record.error}")
        return record

    def _process_env(self, env_dir: Path, container_env: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ) | container_env | self.step_env
        env["VIRTUAL_ENV"] = str(env_dir)
        env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.pop("PYTHONHOME", None)
        return env

    def _container_command(
        self, task: Task, image: LocalImage, command: list[str], container_env: dict[str, str], run_name: str
    ) -> list[str]:
        """`podman run` for the task: only the IR's environment, as in a pod, not this shell's. The
        deploy step starts the local server from the serve image, through the engine's API socket."""
        assert self.containers is not None and self.engine is not None
        env = container_env | self.step_env
        mode = self.containers
        if command[:2] == ["simrec", "deploy"]:
            serve = next((i for r, i in self.images.items() if image_name(r) == "serve"), None)
            if serve is None:
                raise InputError("the deploy step starts the serve image, which no task here names")
            env |= {
                containers.SERVE_IMAGE_ENV: serve.tag,
                "DOCKER_HOST": f"unix://{containers.ENGINE_SOCKET}",
            }
            mode = ContainerMode(
                mode.writable, mode.read_only, sockets={self.engine: containers.ENGINE_SOCKET}
            )
        name = f"simrec-{run_name}-{task.name}".replace("_", "-")
        return mode.command(image, name, command, env, task.container, task.platform)

    def _execute(self, command: list[str], env: dict[str, str], log_path: Path, label: str) -> None:
        tail: list[str] = []
        error = ""  # a step's own one-line error ("simrec <step>: error: …"), when it gave one
        with log_path.open("w") as log:
            try:
                process = subprocess.Popen(
                    command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
                )
            except OSError as exc:
                raise TaskFailed(f"cannot start {command[0]}: {exc}") from exc
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                shown = line.rstrip() if self.verbose else progress_text(line)
                if shown is not None:
                    self.echo(f"  {label} | {shown}")
                tail = [*tail[-TAIL_LINES + 1 :], line.rstrip()]
                if STEP_ERROR.match(line):
                    error = line.strip()
            code = process.wait()
        if code != 0:
            if error:  # bad input, explained in one line by the step
                raise TaskFailed(f"{error} (exit code {code}, log: {log_path})")
            if not self.verbose:  # an unexpected failure: its traceback is in the tail, not in progress lines
                self.echo(f"  {label} | last {len(tail)} lines of {log_path}:")
                for line in tail:
                    self.echo(f"  {label} | {line}")
            raise TaskFailed(f"exit code {code}; last output: {' / '.join(tail[-3:])} (log: {log_path})")

    def _collect_outputs(
        self, executor_input: dict[str, Any], task: Task
    ) -> tuple[dict[str, str], dict[str, Any]]:
        outputs = executor_input["outputs"]
        artifacts = {}
        for name, artifact_list in outputs.get("artifacts", {}).items():
            path = Path(artifact_list["artifacts"][0]["uri"])
            if not path.exists():
                raise TaskFailed(f"the step did not write its output artifact {name!r} ({path})")
            artifacts[name] = str(path)
        parameters = {}
        definitions = task.component.get("outputDefinitions", {}).get("parameters", {})
        for name, spec in outputs.get("parameters", {}).items():
            path = Path(spec["outputFile"])
            if not path.exists():
                raise TaskFailed(f"the step did not write its output parameter {name!r} ({path})")
            parameters[name] = _PARAMETER_PARSERS[definitions[name]["parameterType"]](
                path.read_text().strip()
            )
        return artifacts, parameters
