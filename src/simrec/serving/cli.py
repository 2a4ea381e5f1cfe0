"""`simrec serve`: the similar-items endpoint in the serve environment."""

from __future__ import annotations

import argparse
import functools
import logging
import logging.config
import os
import sys
import threading
from pathlib import Path

from simrec.embedding.runtimes import RUNTIMES
from simrec.infra.errors import InputError
from simrec.records import ENGINE_TOKEN_VARIABLE

TOKEN_VARIABLE = "SIMREC_SERVE_TOKEN"
ADMIN_TOKEN_VARIABLE = "SIMREC_ADMIN_TOKEN"
MODEL_THREADS_VARIABLE = "SIMREC_MODEL_THREADS"
log = logging.getLogger(__name__)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def port_number(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {value}")
    return value


def default_model_threads() -> int:
    """SIMREC_MODEL_THREADS (the container's CPU limit on a cluster), else the CPU count."""
    text = os.environ.get(MODEL_THREADS_VARIABLE)
    if not text:
        return os.cpu_count() or 1
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as exc:
        raise InputError(f"${MODEL_THREADS_VARIABLE}: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simrec serve",
        description="Serve a recommender package over HTTP (friendly JSON, Open Inference Protocol v2, "
        f"web page). The query routes' bearer token comes from ${TOKEN_VARIABLE}; the admin routes "
        f"(deploy, rollback, live additions) exist only when ${ADMIN_TOKEN_VARIABLE} gives them their own "
        "token.",
    )
    _serving_options(parser.add_argument_group("what and where it serves"))
    _model_options(parser.add_argument_group("the model's runtime and threads"))
    _limit_options(parser.add_argument_group("load and request limits"))
    observability = parser.add_argument_group("observability")
    observability.add_argument("--no-access-log", action="store_true", help="no JSON log line per request")
    observability.add_argument("--no-metrics", action="store_true", help="no Prometheus metrics at /metrics")
    return parser


def _serving_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--package", help="recommender package folder to serve at start (else: deploy one)")
    group.add_argument("--version", default="1", help="version label of --package (default 1)")
    group.add_argument("--model-name", default="simrec", help="model name in /v2/models/<name>")
    group.add_argument("--host", default="127.0.0.1")
    group.add_argument("--port", type=port_number, default=8080)
    group.add_argument(
        "--no-auth", action="store_true", help="query routes without a token (local use only; admin never)"
    )
    group.add_argument(
        "--package-root",
        type=Path,
        help="the only folder /admin/deploy loads packages from (default: none, every deploy refused)",
    )
    group.add_argument(
        "--vector-engine-uri",
        help="where this server reaches the vector engine of packages whose vectors are in one (manifest "
        "key vector_engine; default: the URI it records), e.g. http://milvus.milvus:19530; its token, if "
        f"any, from ${ENGINE_TOKEN_VARIABLE}",
    )


def _model_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="ONNX Runtime intra-op and faiss threads per batch (default 1: concurrent batches, not one "
        "batch, use the cores)",
    )
    group.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="onnx",
        help="the embedding model's runtime: onnx (the package's embedding.onnx on ONNX Runtime; the serve "
        "image has nothing else) or keras (its embedding.keras on TensorFlow, in an environment that has "
        "it: benchmarks/serve.py compares the two)",
    )
    group.add_argument(
        "--model-threads",
        type=positive_int,
        help=f"batches embedded and searched at once (default: ${MODEL_THREADS_VARIABLE}, else the CPU "
        "count); ONNX Runtime and faiss run them in parallel, outside Python's GIL",
    )


def _limit_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--latency-budget-ms",
        type=positive_float,
        default=50.0,
        help="the time a query may take in the server; past the queries in flight this allows, requests "
        "are refused with 503 and Retry-After (default 50)",
    )
    group.add_argument(
        "--max-in-flight",
        type=positive_int,
        help="a fixed bound on the queries in flight, instead of the budget's",
    )
    group.add_argument(
        "--max-body-bytes", type=positive_int, default=1 << 20, help="query request limit (1 MiB)"
    )
    group.add_argument(
        "--max-admin-body-bytes",
        type=positive_int,
        default=64 << 20,
        help="admin request limit (64 MiB)",
    )
    group.add_argument(
        "--switch-interval-ms",
        type=positive_float,
        default=0.5,
        help="Python's GIL switch interval (default 0.5)",
    )


def limit_threads(threads: int, model_threads: int = 1, runtime: str = "onnx") -> None:
    """Before any model loads. ONNX Runtime takes its threads per session (simrec.embedding.onnx_model);
    TensorFlow's pools are fixed at first use, and each model thread runs one batch's graph at a time, so
    it needs as many inter-op threads to run them side by side."""
    if runtime == "keras":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(model_threads)
    faiss_threads(threads)


def faiss_threads(threads: int) -> None:
    """OpenMP's thread count is a per-thread setting: every thread that searches sets it."""
    import faiss

    faiss.omp_set_num_threads(threads)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    model_threads = args.model_threads or default_model_threads()
    token = None if args.no_auth else os.environ.get(TOKEN_VARIABLE)
    if not token and not args.no_auth:
        raise InputError(
            f"no token: set {TOKEN_VARIABLE} (a Kubernetes Secret on a cluster) or pass --no-auth"
        )
    admin_token = os.environ.get(ADMIN_TOKEN_VARIABLE) or None
    if admin_token and admin_token == token:
        raise InputError(f"{ADMIN_TOKEN_VARIABLE} must differ from {TOKEN_VARIABLE}: one token per plane")
    import uvicorn

    from simrec.serving.app import Settings, create_app
    from simrec.serving.observe import LOG_CONFIG
    from simrec.serving.state import Refused, ServingState

    logging.config.dictConfig(LOG_CONFIG)

    limit_threads(args.threads, model_threads, args.runtime)
    # While a deploy loads a package in a pool thread, the event loop gets the GIL back within 0.5 ms
    # instead of the default 5 ms, so queries answered meanwhile stay fast.
    sys.setswitchinterval(args.switch_interval_ms / 1000)
    state = ServingState(
        args.model_name, args.package_root, args.runtime, args.threads, args.vector_engine_uri
    )
    settings = Settings(
        token=token,
        admin_token=admin_token,
        max_body=args.max_body_bytes,
        max_admin_body=args.max_admin_body_bytes,
        model_threads=model_threads,
        model_thread_setup=functools.partial(faiss_threads, args.threads),
        latency_budget_s=args.latency_budget_ms / 1000,
        max_in_flight=args.max_in_flight,
        metrics=not args.no_metrics,
        access_log=not args.no_access_log,
    )
    app = create_app(state, settings)

    def load_first() -> None:
        try:
            state.swap_in(args.package, args.version)
        except Refused as refused:
            log.error("not serving %s: %s", args.package, refused.reason)

    if args.package:
        # The server listens (live, not ready) while the package loads, as probes expect.
        threading.Thread(target=load_first, name="load-package", daemon=True).start()
    log.info(
        "simrec serve on http://%s:%d (query token: %s, admin routes: %s)",
        args.host,
        args.port,
        "off" if args.no_auth else "on",
        "on" if admin_token else "off",
    )
    # Logging as configured above (JSON lines); the access log is Observe's, with request ids.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_config=None, log_level="info")
