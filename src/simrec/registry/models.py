"""The one place simrec looks models up in the MLflow model registry (steps image: full MLflow).

References are `NAME@ALIAS` (e.g. `simrec@champion`) or `NAME/VERSION` (e.g. `simrec/3`), optionally with
the `models:/` prefix MLflow itself uses. Evaluate asks for the champion to score it; deploy downloads
what it serves; `simrec lineage` resolves what it explains."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from simrec.infra.errors import InputError
from simrec.infra.files import folder_sha256
from simrec.recommender.package import PACKAGE_FILES, PackageError
from simrec.recommender.pyfunc import PACKAGE_ARTIFACT
from simrec.registry.tracking import client, tracking_uri

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CHALLENGER = "challenger"
DIGEST_TAG = "simrec.validation.digest"  # the validated pyfunc folder's folder_sha256
# MLflow writes this file next to a model it loads through a models:/ URI - on a local store into the
# stored model itself - so it is not part of what was validated.
MLFLOW_ADDED_FILES = ("registered_model_meta",)

_NAME = r"[A-Za-z0-9][\w.\-]*"
_REF = re.compile(rf"^(?:models:/)?(?P<name>{_NAME})(?:@(?P<alias>[A-Za-z][\w\-]*)|/(?P<version>[1-9]\d*))$")


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def model_uri(version: ModelVersion) -> str:
    return f"models:/{version.name}/{version.version}"


def resolve(ref: str) -> ModelVersion:
    """The model version `ref` names; InputError for a malformed reference or an unknown model, alias or
    version (the message names the store and what does exist)."""
    from mlflow.exceptions import MlflowException

    match = _REF.match(ref.strip())
    if not match:
        raise InputError(
            f"model reference {ref!r}: expected NAME@ALIAS or NAME/VERSION, e.g. simrec@champion"
        )
    name, alias, number = match["name"], match["alias"], match["version"]
    registry = client()
    try:
        model = registry.get_registered_model(name)
    except MlflowException as exc:
        if _not_found(exc):
            raise InputError(f"no registered model {name!r} in {tracking_uri()}") from exc
        raise
    if alias is not None:
        if alias not in model.aliases:
            known = ", ".join(f"{a} (v{v})" for a, v in sorted(model.aliases.items())) or "none"
            raise InputError(f"model {name!r} has no alias {alias!r} (aliases: {known})")
        return registry.get_model_version_by_alias(name, alias)
    try:
        return registry.get_model_version(name, number)
    except MlflowException as exc:
        if _not_found(exc):
            latest = max(
                (int(v.version) for v in registry.search_model_versions(f"name='{name}'")), default=0
            )
            raise InputError(f"model {name!r} has no version {number} (latest: {latest or 'none'})") from exc
        raise


def champion(name: str) -> ModelVersion | None:
    """The version the `champion` alias points at; None when the model or the alias does not exist yet."""
    return aliased(name, CHAMPION)


def aliased(name: str, alias: str) -> ModelVersion | None:
    """The version `alias` points at; None when the model or the alias does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        model = client().get_registered_model(name)
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise
    if alias not in model.aliases:
        return None
    return client().get_model_version_by_alias(name, alias)


def aliases(version: ModelVersion) -> list[str]:
    return sorted(getattr(version, "aliases", None) or [])


def download_model(version: ModelVersion, dst: Path) -> Path:
    """The version's pyfunc folder, downloaded into dst/model (replaced if present). When the version
    records the digest of the folder that was validated, the download must match it byte for byte."""
    import mlflow

    target = Path(dst) / "model"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    # From the version's storage location, not models:/…: that path adds a registered_model_meta file,
    # and the folder would no longer be the one that was validated.
    location = client().get_model_version_download_uri(version.name, version.version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(target)))
    expected = (version.tags or {}).get(DIGEST_TAG)
    if expected and stored_digest(local) != expected:
        raise PackageError(f"{model_uri(version)}: the stored model differs from the validated one")
    return local


def stored_digest(model_folder: Path) -> str:
    """The digest of a model folder as validate computed it, whatever MLflow added since."""
    return folder_sha256(model_folder, ignore=MLFLOW_ADDED_FILES)


def package_folder(model_folder: Path) -> Path:
    """The recommender package inside a pyfunc folder, where its MLmodel says the artifact is."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        flavor = Model.load(str(model_folder)).flavors.get("python_function", {})
    except (MlflowException, OSError) as exc:
        raise PackageError(f"{model_folder}: not an MLflow model ({exc})") from exc
    relative = flavor.get("artifacts", {}).get(PACKAGE_ARTIFACT, {}).get("path")
    package = model_folder / relative if relative else None
    if package is None or not all((package / name).is_file() for name in PACKAGE_FILES):
        raise PackageError(f"{model_folder}: not a simrec pyfunc (no recommender package artifact)")
    return package


def download_package(version: ModelVersion, dst: Path) -> Path:
    """Downloads the version into dst and returns the recommender package folder inside it."""
    return package_folder(download_model(version, dst))


# What KServe's storage initializer downloads (besides pvc://, a volume already in the cluster).
CLUSTER_SCHEMES = ("s3", "gs", "hdfs", "webhdfs", "http", "https", "pvc")


def storage_uri(version: ModelVersion, artifacts_destination: str | None = None) -> str:
    """Where the version's model folder is stored, as a URI a cluster can read (see cluster_uri)."""
    return cluster_uri(
        client().get_model_version_download_uri(version.name, version.version), artifacts_destination
    )


def cluster_uri(location: str, artifacts_destination: str | None = None) -> str:
    """An MLflow artifact location as a URI KServe's storage initializer reads. A tracking server that
    proxies artifacts hands out mlflow-artifacts:/PATH; the files are at PATH under the server's
    --artifacts-destination (`artifacts_destination`). A local path is refused: no pod can read it."""
    parsed = urlparse(location)
    if parsed.scheme == "mlflow-artifacts":
        if not artifacts_destination:
            raise InputError(
                f"{location} is proxied by the MLflow server: set serve.kserve.artifacts_destination to "
                "its --artifacts-destination (e.g. s3://bucket/mlflow) so KServe can read it"
            )
        return f"{artifacts_destination.rstrip('/')}/{parsed.path.lstrip('/')}"
    if parsed.scheme in CLUSTER_SCHEMES and (parsed.netloc or parsed.scheme == "pvc"):
        return location
    raise InputError(
        f"KServe cannot read the model at {location}: register models in an artifact store the cluster "
        f"reads ({', '.join(s + '://' for s in CLUSTER_SCHEMES)} or a proxying MLflow server)"
    )
