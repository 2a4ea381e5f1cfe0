"""Evaluate step: embeds the whole catalogue with Spark, measures retrieval (test items against the train
gallery, cosine) for the model, raw pixels and the current champion, builds the nearest-neighbour index
and the recommender package, decides the blessing, and shows the results as pictures and a report."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from pyspark.sql import SparkSession

from simrec import progress
from simrec.data.fashion_mnist import LABEL_NAMES, format_classes, parse_classes
from simrec.data.lake import table_uri
from simrec.embedding import pixel_vectors
from simrec.errors import InputError
from simrec.evaluate import report
from simrec.evaluate.catalogue_embeddings import EMBEDDINGS_TABLE, embed_catalogue, read_vectors
from simrec.evaluate.figures import evaluation_figures
from simrec.evaluate.gate import GATE_METRIC, GATE_MODES, GateSettings, decide
from simrec.evaluate.measure import Catalogue, ann_quality, catalogue_frame, measure
from simrec.files import atomic_write, write_json_atomic
from simrec.index import DEFAULT_SPEC, IndexSpec, build_index
from simrec.kfp_output import write_artifact_metadata
from simrec.lineage import read_lineage
from simrec.mlflow_tracking import DEFAULT_EXPERIMENT, lineage_tags, start_run
from simrec.recommender import MANIFEST_FILE, write_package
from simrec.steps.train import SUMMARY_FILE
from simrec.train.loop import EMBEDDING_MODEL_FILE

log = logging.getLogger(__name__)


def _champion_model(model_name: str, workdir: Path) -> tuple[str, Path] | None:
    """(version, embedding model file) of the registered model's current champion, if it has one."""
    from simrec import registry

    version = registry.champion(model_name)
    if version is None:
        return None
    package = registry.download_package(version, workdir / f"champion-v{version.version}")
    return str(version.version), package / EMBEDDING_MODEL_FILE


def evaluate(
    spark: SparkSession,
    lineage: dict[str, Any],
    model_dir: Path,
    lake_uri: str,
    package_out: Path,
    *,
    gate: GateSettings,
    model_name: str = "simrec",
    exclude_classes: tuple[int, ...] = (),
    index_spec: IndexSpec = DEFAULT_SPEC,
    experiment: str = DEFAULT_EXPERIMENT,
    git_sha: str = "unknown",
    seed: int = 0,
    workdir: Path | None = None,
) -> tuple[dict[str, Any], str]:
    """Returns (the evaluation record, the HTML report) and writes the recommender package."""
    started = time.perf_counter()
    workdir = workdir or package_out.parent / "evaluate-work"
    model_file = model_dir / EMBEDDING_MODEL_FILE
    if not model_file.is_file():
        raise InputError(f"{model_dir}: not a trained model folder (no {EMBEDDING_MODEL_FILE})")
    training = (
        json.loads((model_dir / SUMMARY_FILE).read_text()) if (model_dir / SUMMARY_FILE).exists() else {}
    )
    frame = catalogue_frame(spark, lineage)
    catalogue = Catalogue.collect(frame)
    items, labels = catalogue.items, catalogue.labels
    embeddings_uri = table_uri(lake_uri, EMBEDDINGS_TABLE)

    timer = time.perf_counter()
    model_id, embeddings_version = embed_catalogue(spark, frame, model_file, embeddings_uri)
    vectors = read_vectors(spark, embeddings_uri, model_id, embeddings_version, items["item_id"])
    embed_seconds = time.perf_counter() - timer
    log.info("embedded %d items in %.1f s (model %s)", len(items), embed_seconds, model_id[:12])

    results = {
        "model": measure(vectors, catalogue, exclude_classes),
        "pixels": measure(pixel_vectors(catalogue.pixels), catalogue, exclude_classes),
    }
    champion = _champion_model(model_name, workdir)
    champion_record = None
    if champion is not None:
        champion_version, champion_file = champion
        champion_id, embeddings_version = embed_catalogue(spark, frame, champion_file, embeddings_uri)
        champion_vectors = read_vectors(
            spark, embeddings_uri, champion_id, embeddings_version, items["item_id"]
        )
        results["champion"] = measure(champion_vectors, catalogue, exclude_classes)
        champion_record = {
            "version": champion_version,
            "model_id": champion_id,
            GATE_METRIC: results["champion"]["all"]["metrics"][GATE_METRIC],
        }

    timer = time.perf_counter()
    index_build = build_index(vectors, index_spec)
    index_seconds = time.perf_counter() - timer
    ann = ann_quality(index_build, vectors, labels, catalogue.where("test"))
    smoke = list(items["item_id"].iloc[catalogue.where("test")[:3]])
    write_package(
        package_out,
        model_file,
        items,
        vectors,
        index_spec,
        smoke_items=smoke,
        extra={"model_name": model_name, "exclude_classes": list(exclude_classes)},
        index=index_build,  # built and measured above: the package serves that same index
        # The ONNX model that will serve, against Keras's vectors, on the whole test split; a package
        # whose ONNX model disagrees beyond the tolerance is refused here (PackageError): never built.
        agreement_rows=np.flatnonzero(items["table"].to_numpy() == "test"),
    )
    onnx = json.loads((package_out / MANIFEST_FILE).read_text())["onnx"]
    decision = decide(gate, results["model"]["all"]["metrics"][GATE_METRIC], champion_record)
    decision["reasons"].append(
        f"ONNX model (opset {onnx['opset']}) agrees with Keras: max |difference| "
        f"{onnx['agreement']['max_abs_diff']:.1e} <= {onnx['agreement']['tolerance']:.0e} over "
        f"{onnx['agreement']['images']} test images (else no package would have been built)"
    )
    shown = evaluation_figures(catalogue, vectors, index_build, results, seed)

    metrics = (
        _flat_metrics(results)
        | ann
        | {
            "embed_seconds": embed_seconds,
            "index_build_seconds": index_seconds,
            "catalogue_items": float(len(items)),
            "onnx_max_abs_diff": onnx["agreement"]["max_abs_diff"],
            "onnx_mean_abs_diff": onnx["agreement"]["mean_abs_diff"],
        }
        | (
            {"onnx_top5_identical": onnx["agreement"]["top5_identical"]}
            if "top5_identical" in onnx["agreement"]
            else {}
        )
    )
    evaluation = {
        "model_id": model_id,
        "metrics": metrics,
        "results": results,
        "gate": decision,
        "lineage": lineage,
        "training": {
            "mlflow_run_id": training.get("mlflow_run_id"),
            "params": training.get("params", {}),
            "exclude_classes": list(exclude_classes),
        },
        "embeddings": {"uri": embeddings_uri, "version": embeddings_version},
        "segments": shown["segments"],
        "onnx": onnx,
        "index": {"kind": index_spec.kind, "m": index_spec.m, "ef_search": index_spec.ef_search},
    }
    page = _report(evaluation, shown["figures"], model_name)
    with start_run(experiment, run_name="evaluate") as run:
        mlflow.set_tags(
            lineage_tags(lineage, git_sha)
            | {
                "simrec.step": "evaluate",
                "simrec.model_id": model_id,
                "simrec.training_run_id": str(training.get("mlflow_run_id")),
                "simrec.blessed": str(decision["blessed"]).lower(),
            }
        )
        mlflow.log_params({"gate_mode": gate.mode, "exclude_classes": format_classes(exclude_classes)})
        mlflow.log_metrics(metrics)
        for name, figure in shown["figures"].items():
            mlflow.log_figure(figure, name)
        mlflow.log_text(page, "evaluation.html")
        evaluation["mlflow_run_id"] = run.info.run_id
        mlflow.log_dict(evaluation, "evaluation.json")
    report.plt.close("all")
    evaluation["seconds"] = round(time.perf_counter() - started, 1)
    return evaluation, page


def _flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """{"recall_at_1": …, "pixels_recall_at_1": …, "unseen_recall_at_1": …, "champion_…": …}."""
    flat = {}
    for scorer, protocols in results.items():
        for protocol, measured in protocols.items():
            prefix = "" if scorer == "model" else f"{scorer}_"
            prefix += "" if protocol == "all" else f"{protocol}_"
            flat |= {f"{prefix}{name}": value for name, value in measured["metrics"].items()}
    return flat


def _report(evaluation: dict[str, Any], figures: dict[str, Any], model_name: str) -> str:
    results, gate = evaluation["results"], evaluation["gate"]
    names = list(results["model"]["all"]["metrics"])
    sections: list[tuple[str, Any]] = [
        (
            "Gate",
            f"{'BLESSED' if gate['blessed'] else 'NOT BLESSED'} (mode {gate['mode']}): "
            + "; ".join(gate["reasons"]),
        ),
    ]
    for protocol, heading in (("all", "All classes"), ("unseen", "Classes held out of training")):
        if protocol not in results["model"]:
            continue
        rows = [
            [scorer, *(results[scorer][protocol]["metrics"][name] for name in names)] for scorer in results
        ]
        classes = ", ".join(LABEL_NAMES[c] for c in evaluation["training"]["exclude_classes"])
        title = heading + (f" ({classes})" if protocol == "unseen" else "")
        sections.append((f"{title}: test items against the train gallery, cosine", (rows, ["", *names])))
    per_class = [
        [LABEL_NAMES[int(c)], *(results[s]["all"]["per_class_recall_at_1"][c] for s in results)]
        for c in results["model"]["all"]["per_class_recall_at_1"]
    ]
    sections.append(("recall@1 per class", (per_class, ["class", *results])))
    ann = {k: v for k, v in evaluation["metrics"].items() if k.startswith(("ann_", "exact_"))}
    sections.append(("Nearest-neighbour index", ([[k, v] for k, v in ann.items()], ["measure", "value"])))
    segments = evaluation["segments"]
    sections.append(
        (
            "Catalogue segments (DBSCAN on the map)",
            f"{segments['clusters']} clusters over {segments['points']} test items, sizes "
            f"{segments['sizes']}, {segments['noise']} noise points",
        )
    )
    sections += [(name.removesuffix(".png").replace("_", " "), figure) for name, figure in figures.items()]
    return report.html_report(f"{model_name}: evaluation of model {evaluation['model_id'][:12]}", sections)


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
    parser.add_argument("--index-m", type=int, default=IndexSpec.m, help="HNSW graph degree")
    parser.add_argument(
        "--index-ef-search", type=int, default=IndexSpec.ef_search, help="HNSW search breadth"
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
    index_spec = IndexSpec(m=args.index_m, ef_search=args.index_ef_search)
    lineage = read_lineage(args.lineage)
    from simrec.spark import get_spark

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
        experiment=args.experiment,
        git_sha=args.git_sha,
        workdir=args.evaluation_out.parent / "work",
    )
    write_json_atomic(args.evaluation_out, evaluation)
    write_json_atomic(args.metrics_out, evaluation["metrics"])
    with atomic_write(args.report_out, "w") as out:
        out.write(page)
    args.blessed_out.parent.mkdir(parents=True, exist_ok=True)
    args.blessed_out.write_text("true" if evaluation["gate"]["blessed"] else "false")
    if args.executor_input:
        write_artifact_metadata(args.executor_input, {"metrics": evaluation["metrics"]})
    m, gate = evaluation["metrics"], evaluation["gate"]
    unseen = (
        f", unseen classes {m['unseen_recall_at_1']:.4f} (pixels {m['pixels_unseen_recall_at_1']:.4f})"
        if "unseen_recall_at_1" in m
        else ""
    )
    progress.report(
        f"recall@1 {m['recall_at_1']:.4f} (raw pixels {m['pixels_recall_at_1']:.4f}){unseen}, "
        f"mAP@10 {m['map_at_10']:.4f}; ANN recall@10 loss {m['ann_recall_loss_at_10']:.4f}; "
        f"{'blessed' if gate['blessed'] else 'not blessed'}: {'; '.join(gate['reasons'])}"
    )
