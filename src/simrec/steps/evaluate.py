"""Evaluate step: embeds the whole catalogue with Spark, measures retrieval (test items against the train
gallery, cosine) for the model, raw pixels and the current champion, builds the nearest-neighbour index
and the recommender package (its vectors published to a vector engine when one is given), decides the
blessing, and shows the results as pictures and a report."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import mlflow
from pyspark.sql import SparkSession

from simrec.data.fashion_mnist import format_classes, parse_classes
from simrec.data.lake import table_uri
from simrec.data.lineage import read_lineage
from simrec.evaluate import report
from simrec.evaluate.catalogue_embeddings import EMBEDDINGS_TABLE
from simrec.evaluate.figures import evaluation_figures
from simrec.evaluate.gate import GATE_MODES, GateSettings, decide
from simrec.evaluate.measure import Catalogue, catalogue_frame
from simrec.evaluate.packaging import DEFAULT_ALIAS, EngineTarget, package_candidate
from simrec.evaluate.scoring import flat_metrics, score
from simrec.infra import progress
from simrec.infra.errors import InputError
from simrec.infra.files import atomic_write, write_json_atomic
from simrec.infra.kfp_output import write_artifact_metadata
from simrec.records import ENGINE_TOKEN_VARIABLE, Evaluation, Lineage, Training, write_record
from simrec.registry.tracking import DEFAULT_EXPERIMENT, lineage_tags, start_run
from simrec.retrieval.engine import VectorEngineError
from simrec.retrieval.index import DEFAULT_SPEC, KINDS, IndexSpec
from simrec.steps.train import SUMMARY_FILE
from simrec.train.loop import EMBEDDING_MODEL_FILE


def _champion_model(model_name: str, workdir: Path) -> tuple[str, Path] | None:
    """(version, embedding model file) of the registered model's current champion, if it has one."""
    from simrec.registry import models as registry

    version = registry.champion(model_name)
    if version is None:
        return None
    package = registry.download_package(version, workdir / f"champion-v{version.version}")
    return str(version.version), package / EMBEDDING_MODEL_FILE


def _trained_model(model_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Train's model file and its summary (the training run, its parameters; empty when not recorded)."""
    model_file = model_dir / EMBEDDING_MODEL_FILE
    if not model_file.is_file():
        raise InputError(f"{model_dir}: not a trained model folder (no {EMBEDDING_MODEL_FILE})")
    summary = model_dir / SUMMARY_FILE
    return model_file, json.loads(summary.read_text()) if summary.exists() else {}


def evaluate(
    spark: SparkSession,
    lineage: Lineage,
    model_dir: Path,
    lake_uri: str,
    package_out: Path,
    *,
    gate: GateSettings,
    model_name: str = "simrec",
    exclude_classes: tuple[int, ...] = (),
    index_spec: IndexSpec = DEFAULT_SPEC,
    engine: EngineTarget | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    git_sha: str = "unknown",
    seed: int = 0,
    workdir: Path | None = None,
) -> tuple[Evaluation, str]:
    """Returns (the evaluation record, the HTML report) and writes the recommender package, after
    publishing the catalogue's vectors to `engine` when given (None: the package's in-process index only)."""
    started = time.perf_counter()
    model_file, training = _trained_model(model_dir)
    frame = catalogue_frame(spark, lineage)
    catalogue = Catalogue.collect(frame)
    champion = _champion_model(model_name, workdir or package_out.parent / "evaluate-work")
    embeddings_uri = table_uri(lake_uri, EMBEDDINGS_TABLE)
    scored = score(spark, frame, catalogue, model_file, embeddings_uri, champion, exclude_classes)
    extra = {"model_name": model_name, "exclude_classes": list(exclude_classes)}
    packaged = package_candidate(
        package_out, model_file, catalogue, scored.vectors, index_spec, extra, engine
    )
    decision = decide(gate, scored.score, scored.champion)
    decision.reasons.append(packaged.agreement_reason())
    shown = evaluation_figures(catalogue, scored.vectors, packaged.index, scored.results, seed)
    evaluation = Evaluation(
        model_id=scored.model_id,
        metrics=flat_metrics(scored.results)
        | packaged.metrics()
        | {"embed_seconds": scored.embed_seconds, "catalogue_items": float(len(catalogue.items))},
        results=scored.results,
        gate=decision,
        lineage=lineage,
        training=Training(
            mlflow_run_id=training.get("mlflow_run_id"),
            params=training.get("params", {}),
            exclude_classes=list(exclude_classes),
        ),
        embeddings=scored.embeddings,
        segments=shown["segments"],
        onnx=packaged.onnx,
        index=index_spec.settings(),
        vector_engine=packaged.vector_engine,
    )
    page = report.evaluation_report(evaluation, shown["figures"], model_name)
    _log_run(evaluation, page, shown["figures"], gate, experiment, git_sha)
    report.plt.close("all")
    evaluation.seconds = round(time.perf_counter() - started, 1)
    return evaluation, page


def _log_run(
    evaluation: Evaluation,
    page: str,
    figures: dict[str, Any],
    gate: GateSettings,
    experiment: str,
    git_sha: str,
) -> None:
    """The evaluate run in MLflow: lineage tags, settings, metrics, pictures, the page and the record
    (which then names the run)."""
    training = evaluation.training
    with start_run(experiment, run_name="evaluate") as run:
        mlflow.set_tags(
            lineage_tags(evaluation.lineage, git_sha)
            | {
                "simrec.step": "evaluate",
                "simrec.model_id": evaluation.model_id,
                "simrec.training_run_id": str(training.mlflow_run_id),
                "simrec.blessed": str(evaluation.gate.blessed).lower(),
            }
            | {f"simrec.vector_engine.{key}": value for key, value in evaluation.vector_engine.items()}
        )
        exclude_classes = format_classes(tuple(training.exclude_classes))
        mlflow.log_params({"gate_mode": gate.mode, "exclude_classes": exclude_classes})
        mlflow.log_metrics(evaluation.metrics)
        for name, figure in figures.items():
            mlflow.log_figure(figure, name)
        mlflow.log_text(page, "evaluation.html")
        evaluation.mlflow_run_id = run.info.run_id
        mlflow.log_dict(evaluation.model_dump(mode="json"), "evaluation.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simrec evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--lineage", required=True, help="ingest's lineage: JSON text, or a JSON file")
    parser.add_argument("--model", type=Path, required=True, help="train's model folder")
    parser.add_argument("--lake-uri", required=True, help="root of the Delta tables (embeddings go there)")
    parser.add_argument("--exclude-classes", default="", help="classes the model was trained without")
    parser.add_argument("--model-name", default="simrec", help="registered model whose champion competes")
    parser.add_argument("--gate-mode", choices=GATE_MODES, default="enabled")
    parser.add_argument("--min-recall-at-1", type=float, default=0.0)
    parser.add_argument("--max-regression", type=float, default=0.0)
    parser.add_argument("--index-kind", choices=KINDS, default=IndexSpec.kind, help="nearest-neighbour index")
    parser.add_argument("--index-m", type=int, default=IndexSpec.m, help="HNSW graph degree")
    parser.add_argument(
        "--index-ef-search", type=int, default=IndexSpec.ef_search, help="HNSW search breadth"
    )
    parser.add_argument("--index-nlist", type=int, default=IndexSpec.nlist, help="ivfpq: inverted lists")
    parser.add_argument("--index-nprobe", type=int, default=IndexSpec.nprobe, help="ivfpq: lists searched")
    parser.add_argument("--index-pq-m", type=int, default=IndexSpec.pq_m, help="ivfpq: 4-bit PQ codes")
    parser.add_argument(
        "--index-pca-dim", type=int, default=IndexSpec.pca_dim, help="ivfpq: dimensions kept (0: no PCA)"
    )
    parser.add_argument(
        "--index-rerank", type=int, default=IndexSpec.rerank, help="ivfpq: candidates re-ranked per result"
    )
    parser.add_argument(
        "--vector-engine-uri",
        default="",
        help="publish the catalogue's vectors to this vector engine (Milvus; token from "
        f"${ENGINE_TOKEN_VARIABLE}); empty: the package's in-process index only",
    )
    parser.add_argument(
        "--vector-engine-alias",
        default=DEFAULT_ALIAS,
        help="the catalogue's serving alias in the engine; its versions are collections ALIAS_v<N>",
    )
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment")
    parser.add_argument("--git-sha", default="unknown")
    parser.add_argument("--package-out", type=Path, required=True, help="folder for the recommender package")
    parser.add_argument("--evaluation-out", type=Path, required=True, help="evaluation JSON")
    parser.add_argument("--metrics-out", type=Path, required=True, help="scalar metrics (KFP Metrics)")
    parser.add_argument("--report-out", type=Path, required=True, help="HTML report (KFP HTML)")
    parser.add_argument("--blessed-out", type=Path, required=True, help="true/false (KFP output parameter)")
    parser.add_argument("--executor-input", help="KFP's executor input ({{$}}), to publish metric values")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    gate = GateSettings(args.gate_mode, args.min_recall_at_1, args.max_regression)
    index_spec = IndexSpec(
        kind=args.index_kind,
        m=args.index_m,
        ef_search=args.index_ef_search,
        nlist=args.index_nlist,
        nprobe=args.index_nprobe,
        pq_m=args.index_pq_m,
        pca_dim=args.index_pca_dim,
        rerank=args.index_rerank,
    )
    engine = (
        EngineTarget(
            args.vector_engine_uri, args.vector_engine_alias, os.environ.get(ENGINE_TOKEN_VARIABLE, "")
        )
        if args.vector_engine_uri
        else None
    )
    lineage = read_lineage(args.lineage)
    from simrec.infra.spark import get_spark

    try:
        evaluation, page = evaluate(
            get_spark("simrec-evaluate"),
            lineage,
            args.model,
            args.lake_uri,
            args.package_out,
            gate=gate,
            model_name=args.model_name,
            exclude_classes=parse_classes(args.exclude_classes),
            index_spec=index_spec,
            engine=engine,
            experiment=args.experiment,
            git_sha=args.git_sha,
            workdir=args.evaluation_out.parent / "work",
        )
    except VectorEngineError as exc:  # it names the engine, the operation and the cause; no package written
        sys.exit(f"simrec evaluate: error: {exc}")
    write_record(args.evaluation_out, evaluation)
    write_json_atomic(args.metrics_out, evaluation.metrics)
    with atomic_write(args.report_out, "w") as out:
        out.write(page)
    args.blessed_out.parent.mkdir(parents=True, exist_ok=True)
    args.blessed_out.write_text("true" if evaluation.gate.blessed else "false")
    if args.executor_input:
        write_artifact_metadata(args.executor_input, {"metrics": evaluation.metrics})
    progress.report(_summary(evaluation))


def _summary(evaluation: Evaluation) -> str:
    m, gate = evaluation.metrics, evaluation.gate
    unseen = (
        f", unseen classes {m['unseen_recall_at_1']:.4f} (pixels {m['pixels_unseen_recall_at_1']:.4f})"
        if "unseen_recall_at_1" in m
        else ""
    )
    engine = evaluation.vector_engine
    published = f"; vectors in {engine['uri']} as {engine['collection']}" if engine else ""
    return (
        f"recall@1 {m['recall_at_1']:.4f} (raw pixels {m['pixels_recall_at_1']:.4f}){unseen}, "
        f"mAP@10 {m['map_at_10']:.4f}; ANN recall@10 loss {m['ann_recall_loss_at_10']:.4f}; "
        f"{'blessed' if gate.blessed else 'not blessed'}: {'; '.join(gate.reasons)}" + published
    )
