"""Reading a compiled pipeline (KFP v2 IR YAML): its parameters, tasks, executors and dependencies."""

from __future__ import annotations

import graphlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from simrec.infra.errors import InputError


@dataclass(frozen=True)
class Task:
    name: str
    component: dict[str, Any]  # the ComponentSpec
    container: dict[str, Any]  # image, command, args
    inputs: dict[str, Any]  # the task's parameter and artifact wiring
    caching: bool
    upstream: frozenset[str]
    platform: dict[str, Any]  # the executor's Kubernetes settings (volumes, env from the pod)


@dataclass(frozen=True)
class PipelineIR:
    name: str
    parameters: dict[str, Any]  # name -> default (None when required)
    tasks: list[Task]  # in dependency order


def _upstream(spec: dict[str, Any]) -> set[str]:
    producers = set(spec.get("dependentTasks", []))
    for kind, key in (("parameters", "taskOutputParameter"), ("artifacts", "taskOutputArtifact")):
        for wiring in spec.get("inputs", {}).get(kind, {}).values():
            if key in wiring:
                producers.add(wiring[key]["producerTask"])
    return producers


def load_ir(path: Path) -> PipelineIR:
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read the compiled pipeline: {exc}") from exc
    spec = next((d for d in documents if isinstance(d, dict) and "pipelineInfo" in d), None)
    if spec is None:
        raise InputError(f"{path}: no pipeline spec (pipelineInfo) in this YAML")
    dag_tasks = spec["root"]["dag"]["tasks"]
    unsupported = [n for n, t in dag_tasks.items() if "dag" in spec["components"][t["componentRef"]["name"]]]
    if unsupported:
        raise InputError(f"{path}: nested DAGs (conditions, loops) are not supported yet: {unsupported}")
    executors = spec["deploymentSpec"]["executors"]
    platform = next((d for d in documents if isinstance(d, dict) and "platforms" in d), {})
    kubernetes = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
    graph = {name: _upstream(t) for name, t in dag_tasks.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise InputError(f"{path}: tasks depend on each other in a cycle: {exc.args[1]}") from exc
    tasks = []
    for name in order:
        task = dag_tasks[name]
        component = spec["components"][task["componentRef"]["name"]]
        tasks.append(
            Task(
                name=name,
                component=component,
                container=executors[component["executorLabel"]]["container"],
                inputs=task.get("inputs", {}),
                caching=bool(task.get("cachingOptions", {}).get("enableCache", False)),
                upstream=frozenset(graph[name]),
                platform=kubernetes.get("executors", {}).get(component["executorLabel"], {}),
            )
        )
    parameters = {
        name: p.get("defaultValue")
        for name, p in spec["root"].get("inputDefinitions", {}).get("parameters", {}).items()
    }
    return PipelineIR(name=spec["pipelineInfo"]["name"], parameters=parameters, tasks=tasks)
