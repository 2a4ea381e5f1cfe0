"""What the oldest supported Kubeflow Pipelines backend executes, and the checks that keep the IR inside it.

The KFP backend is stricter than `kfp.local`: read its driver and launcher, not the SDK, to know what a
construct does on a cluster. Every rule below names the upstream file (kubeflow/pipelines, at the tags
given) that shows the behaviour. `simrec compile`, `simrec run` and `simrec submit` all compile through
`lower_and_check`, so a component YAML or setting that a supported backend would not execute as written
is refused here, with the component, the input and the reason, instead of failing on the cluster.

Support floor: KFP 2.4.1 (Kubeflow 1.10). Older backends ignore task retries (train resumes from its
checkpoints only when its pod is retried), and 2.2/2.3 drivers reject platform fields they do not know."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# The support matrix (README, docs/cluster.md); tests/control/test_backend_conformance.py holds the IR to it.
OLDEST_KFP = "2.4.1"
SUPPORT_MATRIX = {
    "Kubeflow Pipelines backend": ("2.4.1", "2.17.0"),
    "Kubeflow (platform)": ("1.10", "1.10"),
    "KServe": ("0.14", "0.15"),
    "Knative Serving": ("1.12", "1.16"),
    "Kubernetes": ("1.29", "1.33"),
}

# KFP's SDK encodes structured placeholders as one JSON string argument; the launcher before 2.17.0 only
# replaces plain placeholders inside strings (backend/src/v2/component/launcher_v2.go, getPlaceholders),
# so such an argument reaches the program as literal JSON text (kubeflow/pipelines #11009; IfPresent is
# expanded from 2.17.0 by #12598, Concat not at all).
STRUCTURED_PLACEHOLDERS = ("IfPresent", "Concat")
# Substituted by the driver only when a task input's whole constant is one of them, and only from 2.5.0
# (backend/src/v2/driver/driver.go resolveInputParameter at 2.5.0; driver/resolve.go later); 2.4.1 never.
JOB_PLACEHOLDER = re.compile(r"\{\{\$\.pipeline_(job|task)_\w+\}\}")
PARAMETER_PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")
ARTIFACT_PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.artifacts\['([^']+)'\]\.(?:path|uri)\}\}")

# The Kubernetes platform spec fields that KFP 2.4.1's driver reads: kubernetes_platform/proto/
# kubernetes_executor_config.proto at tag 2.4.1 (the module backend/src/v2/driver/driver.go is built with),
# in protojson's camelCase, message by message. 2.4.1 skips unknown fields; 2.2/2.3 fail on them (#11935,
# #12495). `enabledSharedMemory` is in that proto but the 2.4.1 driver never applies it, so it is left out.
_TASK_OUTPUT = {"producerTask": None, "outputParameterKey": None}
_KEY_TO_ENV = {"secretKey": None, "envVar": None}
_SELECTOR = {"key": None, "operator": None, "values": None}
_POD_METADATA = {"labels": None, "annotations": None}
KNOWN_PLATFORM_FIELDS: dict[str, Any] = {
    "secretAsVolume": {"secretName": None, "mountPath": None, "optional": None},
    "secretAsEnv": {"secretName": None, "keyToEnv": _KEY_TO_ENV},
    "pvcMount": {
        "taskOutputParameter": _TASK_OUTPUT,
        "constant": None,
        "componentInputParameter": None,
        "mountPath": None,
    },
    "nodeSelector": {"labels": None},
    "podMetadata": _POD_METADATA,
    "imagePullSecret": {"secretName": None},
    "imagePullPolicy": None,
    "configMapAsVolume": {"configMapName": None, "mountPath": None, "optional": None},
    "configMapAsEnv": {"configMapName": None, "keyToEnv": {"configMapKey": None, "envVar": None}},
    "activeDeadlineSeconds": None,
    "fieldPathAsEnv": {"name": None, "fieldPath": None},
    "tolerations": {"key": None, "operator": None, "value": None, "effect": None, "tolerationSeconds": None},
    "genericEphemeralVolume": {
        "volumeName": None,
        "mountPath": None,
        "accessModes": None,
        "size": None,
        "defaultStorageClass": None,
        "storageClassName": None,
        "metadata": _POD_METADATA,
    },
    "nodeAffinity": {"matchExpressions": _SELECTOR, "matchFields": _SELECTOR, "weight": None},
    "podAffinity": {
        "matchPodExpressions": _SELECTOR,
        "matchPodLabels": None,
        "topologyKey": None,
        "namespaces": None,
        "matchNamespaceExpressions": _SELECTOR,
        "matchNamespaceLabels": None,
        "weight": None,
        "anti": None,
    },
    "emptyDirMounts": {"volumeName": None, "mountPath": None, "medium": None, "sizeLimit": None},
}
# The pod fields Kubernetes lets an env var take from the downward API (fieldRef); anything else is
# refused by the API server when the driver's pod is created.
DOWNWARD_API_FIELDS = re.compile(
    r"metadata\.(name|namespace|uid|labels\['[^']+'\]|annotations\['[^']+'\])"
    r"|spec\.(nodeName|serviceAccountName)|status\.(hostIP|hostIPs|podIP|podIPs)"
)


@dataclass(frozen=True)
class Violation:
    """One construct a supported backend would not execute as written."""

    where: str  # "component train, input best_params"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def structured_placeholder(argument: str) -> str | None:
    """The kind of a compiled structured placeholder ("IfPresent", "Concat"), or None for a plain one."""
    if not argument.startswith("{"):
        return None
    try:
        value = json.loads(argument)
    except json.JSONDecodeError:
        return None
    if isinstance(value, dict) and len(value) == 1 and (kind := next(iter(value))) in STRUCTURED_PLACEHOLDERS:
        return kind
    return None


def _named_inputs(argument: str) -> list[str]:
    return PARAMETER_PLACEHOLDER.findall(argument) + ARTIFACT_PLACEHOLDER.findall(argument)


def _check_container(component: str, container: dict[str, Any]) -> list[Violation]:
    found = []
    for argument in [*container.get("command", []), *container.get("args", [])]:
        if kind := structured_placeholder(argument):
            names = ", ".join(sorted(set(_named_inputs(argument)))) or "-"
            found.append(
                Violation(
                    f"component {component}, input {names}",
                    f"{{{kind}}} ({'if/isPresent' if kind == 'IfPresent' else 'concat'} in the YAML) reaches "
                    f"the program as one literal JSON argument on KFP {OLDEST_KFP} to 2.16: the launcher "
                    "replaces only plain placeholders (backend/src/v2/component/launcher_v2.go). Give the "
                    "input a default and always pass its flag",
                )
            )
        if JOB_PLACEHOLDER.search(argument):
            found.append(Violation(f"component {component}, argument {argument!r}", _JOB_REASON))
    accelerator = container.get("resources", {}).get("accelerator")
    if accelerator:
        count = accelerator.get("resourceCount", "")
        if not re.fullmatch(r"[1-9][0-9]*", str(count)) or int(accelerator.get("count", 0)) != int(count):
            found.append(
                Violation(
                    f"component {component}, accelerator count {count or accelerator.get('count')!r}",
                    "the GPU count must be a whole number fixed at compile time: the driver reads a "
                    "parameter placeholder there with GetStringValue(), which is empty for a number, and "
                    "requests no GPU (backend/src/v2/driver/util.go, driver.go at 2.4.1 to 2.17.0); 2.2 "
                    "reads only `count`",
                )
            )
    return found


_JOB_REASON = (
    "a job placeholder ({{$.pipeline_job_uuid}} and the like) is never substituted by KFP 2.4.1, and from "
    "2.5.0 only when a task input's whole constant is the placeholder (backend/src/v2/driver/driver.go, "
    "resolveInputParameter): the program would get the literal text. Use the run's identity from the pod "
    "(the downward API) instead"
)


def _check_task(task_name: str, task: dict[str, Any], component: dict[str, Any]) -> list[Violation]:
    found = []
    wired = task.get("inputs", {})
    definitions = component.get("inputDefinitions", {})
    for name in definitions.get("parameters", {}):
        if name not in wired.get("parameters", {}):
            found.append(
                Violation(
                    f"task {task_name}, input {name}",
                    "not passed by the pipeline: every task passes every input explicitly, because KFP "
                    "2.17.0 fails a task that leaves out an input with a default (kubeflow/pipelines "
                    "#14175) and before it a left-out input without one reaches the program as the literal "
                    "placeholder",
                )
            )
    for name, spec in definitions.get("artifacts", {}).items():
        if spec.get("isOptional") and name not in wired.get("artifacts", {}):
            found.append(
                Violation(
                    f"task {task_name}, input {name}",
                    "an optional artifact left unconnected reaches the program as the literal placeholder "
                    "(launcher_v2.go only substitutes artifacts it was given)",
                )
            )
    for name, wiring in wired.get("parameters", {}).items():
        constant = wiring.get("runtimeValue", {}).get("constant")
        if isinstance(constant, str) and JOB_PLACEHOLDER.search(constant):
            found.append(Violation(f"task {task_name}, input {name} = {constant!r}", _JOB_REASON))
    return found


def _check_fields(where: str, value: Any, known: Any) -> list[Violation]:
    if known is None:
        return []
    if isinstance(value, list):
        return [v for item in value for v in _check_fields(where, item, known)]
    if not isinstance(value, dict):
        return []
    found = []
    for key, item in value.items():
        if key not in known:
            found.append(
                Violation(
                    f"{where}, field {key}",
                    f"unknown to KFP {OLDEST_KFP}'s driver (kubernetes_platform/proto/"
                    "kubernetes_executor_config.proto at 2.4.1): ignored there, rejected by 2.2/2.3",
                )
            )
        else:
            found += _check_fields(f"{where}.{key}", item, known[key])
    return found


def check_platform(executors: dict[str, Any]) -> list[Violation]:
    found = []
    for executor, config in executors.items():
        found += _check_fields(f"platform setting of {executor}", config, KNOWN_PLATFORM_FIELDS)
        for env in config.get("fieldPathAsEnv", []):
            if not DOWNWARD_API_FIELDS.fullmatch(env.get("fieldPath", "")):
                found.append(
                    Violation(
                        f"platform setting of {executor}, env {env.get('name')}",
                        f"field path {env.get('fieldPath')!r} is not one Kubernetes exposes to env vars",
                    )
                )
    return found


def check(spec: dict[str, Any], platform: dict[str, Any] | None) -> list[Violation]:
    """Every construct in a compiled pipeline (the IR's two documents) that a supported backend would not
    execute as written."""
    found: list[Violation] = []
    executors = spec["deploymentSpec"]["executors"]
    for name, component in spec["components"].items():
        executor = executors.get(component.get("executorLabel", ""), {})
        if "container" in executor:
            found += _check_container(name.removeprefix("comp-"), executor["container"])
    for task_name, task in spec["root"]["dag"]["tasks"].items():
        found += _check_task(task_name, task, spec["components"][task["componentRef"]["name"]])
    kubernetes = ((platform or {}).get("platforms") or {}).get("kubernetes", {})
    found += check_platform(kubernetes.get("deploymentSpec", {}).get("executors", {}))
    return found


def _lower(entry: dict[str, Any], name_field: str, parameter_field: str) -> None:
    """Drops a newer SDK's duplicate of a name the old field already carries (kfp-kubernetes writes both)."""
    parameter = entry.get(parameter_field, {})
    constant = parameter.get("runtimeValue", {}).get("constant")
    if constant is not None and constant == entry.get(name_field) and len(parameter) == 1:
        del entry[parameter_field]


def lower_platform(platform: dict[str, Any]) -> dict[str, Any]:
    """The platform document in the fields KFP 2.4.1's driver reads. kfp-kubernetes 2.x writes each Secret
    and claim name twice (`secretName` and `secretNameParameter`, `constant` and `pvcNameParameter`) and
    `optional: false` (the default); where the new field says what the old one says it is dropped, so the
    IR parses on every supported driver. Anything that carries more (a Secret marked optional, a name from
    a run parameter) stays and `check` refuses it."""
    executors = (
        platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    )
    for config in executors.values():
        for entry in config.get("secretAsEnv", []) + config.get("secretAsVolume", []):
            _lower(entry, "secretName", "secretNameParameter")
        for entry in config.get("secretAsEnv", []):
            if entry.get("optional") is False:
                del entry["optional"]
        for entry in config.get("configMapAsVolume", []) + config.get("configMapAsEnv", []):
            _lower(entry, "configMapName", "configMapNameParameter")
        for entry in config.get("pvcMount", []):
            _lower(entry, "constant", "pvcNameParameter")
    return platform
