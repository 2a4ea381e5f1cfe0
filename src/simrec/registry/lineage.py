"""`simrec lineage MODEL@ALIAS|MODEL/VERSION`: a registered version's chain back to its data and code -
version and aliases, training run (parameters, metrics), Delta table versions, the vector engine's
collection (when evaluate published one), source file checksums, git SHA, pipeline run. Read from the
version's `simrec.*` tags (written by register) and the training run in the same MLflow store."""

from __future__ import annotations

import argparse
from typing import Any

from simrec.registry.models import aliases, resolve
from simrec.registry.tracking import client


def _under(tags: dict[str, str], prefix: str) -> dict[str, str]:
    return {key[len(prefix) :]: value for key, value in sorted(tags.items()) if key.startswith(prefix)}


def describe(ref: str) -> dict[str, Any]:
    """The lineage of the version `ref` names, as data (InputError for a bad or unknown reference)."""
    from mlflow.exceptions import MlflowException

    version = resolve(ref)
    tags = dict(version.tags or {})
    tables: dict[str, dict[str, str]] = {}
    for key, value in _under(tags, "simrec.delta.").items():
        table, _, field = key.rpartition(".")
        tables.setdefault(table, {})[field] = value
    sources = {key.removesuffix(".sha256"): value for key, value in _under(tags, "simrec.source.").items()}
    run_id = tags.get("simrec.training_run_id", "")
    training: dict[str, Any] = {"run_id": run_id or None}
    if run_id:
        try:
            run = client().get_run(run_id)
            training |= {"params": dict(run.data.params), "metrics": dict(run.data.metrics)}
            training["status"] = run.info.status
        except MlflowException:
            training["missing"] = True  # deleted, or another store: the version's tags still say enough
    return {
        "name": version.name,
        "version": str(version.version),
        "aliases": aliases(version),
        "description": version.description or "",
        "model_id": tags.get("simrec.model_id"),
        "promotion": tags.get("simrec.promotion"),
        "gate": _under(tags, "simrec.gate."),
        "metrics": _under(tags, "simrec.metric."),
        "training": training,
        "training_params": _under(tags, "simrec.train."),
        "tables": tables,
        "sources": sources,
        "embeddings": _under(tags, "simrec.embeddings."),
        "vector_engine": _under(tags, "simrec.vector_engine."),
        "git_sha": tags.get("simrec.git_sha"),
        "pipeline_run_id": tags.get("simrec.pipeline_run_id"),
    }


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "(none)"


def render(lineage: dict[str, Any]) -> str:
    training = lineage["training"]
    lines = [
        f"model version  {lineage['name']}/{lineage['version']}  "
        f"aliases: {', '.join(lineage['aliases']) or '(none)'}",
        f"  model_id     {lineage['model_id']}  (embedding.keras sha256)",
        f"  gate         {_pairs(lineage['gate'])}",
        f"  promotion    {lineage['promotion']}",
        f"  metrics      {_pairs(lineage['metrics'])}",
        f"training run   {training['run_id'] or '(not recorded)'}"
        + ("  (not found in this store)" if training.get("missing") else ""),
        f"  params       {_pairs(training.get('params') or lineage['training_params'])}",
    ]
    if "metrics" in training:
        lines.append(f"  metrics      {_pairs(training['metrics'])}")
    lines.append("delta tables")
    for name, table in sorted(lineage["tables"].items()):
        rows = f"  {table['rows']} rows" if "rows" in table else ""
        lines.append(f"  {name:<12} {table.get('uri')}  version {table.get('version')}{rows}")
    if lineage["embeddings"]:
        embeddings = lineage["embeddings"]
        lines.append(f"  {'embeddings':<12} {embeddings.get('uri')}  version {embeddings.get('version')}")
    if engine := lineage["vector_engine"]:
        lines.append(
            f"vector engine  {engine.get('uri')}  collection {engine.get('collection')}  "
            f"alias {engine.get('alias')}"
        )
    lines.append("source files")
    lines += [f"  {name}  sha256 {digest}" for name, digest in sorted(lineage["sources"].items())]
    lines.append(f"git sha        {lineage['git_sha']}")
    lines.append(f"pipeline run   {lineage['pipeline_run_id']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simrec lineage", description=__doc__.splitlines()[0])
    parser.add_argument("ref", help="NAME@ALIAS or NAME/VERSION, e.g. simrec@champion (MLFLOW_TRACKING_URI)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    print(render(describe(args.ref)))
