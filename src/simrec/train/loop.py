"""The training loop every Horovod rank (or a single tuning process) runs.

Gradients are averaged with horovod's DistributedGradientTape (the API that averages under every Keras
version; tests/steps/test_train_sync.py proves it), the learning rate is scaled by the world size, the
initial state is broadcast from rank 0, and only rank 0 validates, logs and checkpoints.

About 320 lines: setup, the state a resumed run restores, one epoch and saving it are one protocol
between ranks; apart, each part would need the others' invariants restated."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from simrec.infra.crash_points import crash_point
from simrec.infra.files import write_json_atomic
from simrec.retrieval.exact import recall_at_k, top_k
from simrec.train.data import Arrays, ShardSource, training_batches
from simrec.train.losses import cosine_softmax_loss, multi_similarity_loss
from simrec.train.model import CosineSoftmax, build_embedding_model, inference_model
from simrec.train.params import TrainParams

NUM_CLASSES = 10
WARMUP_SHARE = 0.05  # of all steps, for the cosine schedule: Adam's first steps at full rate are noisy


class TrialTimeout(RuntimeError):
    pass


class NonFiniteLoss(RuntimeError):
    pass


HISTORY_FILE = "history.json"
EMBEDDING_MODEL_FILE = "embedding.keras"


@dataclass(frozen=True)
class TrainJob:
    params: TrainParams
    source: ShardSource
    steps_per_epoch: int
    validation: Arrays
    checkpoint_dir: str
    model_dir: str
    resume: bool = False
    mlflow_run_id: str | None = None
    threads: int = 0  # intra-op threads per process; 0 lets TensorFlow choose
    deadline: float | None = None  # time.time() after which training stops with TrialTimeout
    env: dict[str, str] = field(default_factory=dict)


def build_training_model(params: TrainParams) -> tuple[tf.keras.Model, tf.keras.Model]:
    """(embedding model, training model: images -> [embedding, logits])."""
    embedder = build_embedding_model(params.architecture, params.embedding_dim, params.dropout)
    logits = CosineSoftmax(NUM_CLASSES, params.softmax_scale, name="cosine_softmax")(embedder.output)
    return embedder, tf.keras.Model(embedder.input, [embedder.output, logits])


def training_loss(
    params: TrainParams, labels: tf.Tensor, embeddings: tf.Tensor, logits: tf.Tensor
) -> tf.Tensor:
    loss = tf.constant(0.0)
    if params.loss in ("ms", "ms+softmax"):
        loss += multi_similarity_loss(
            labels, embeddings, params.ms_alpha, params.ms_beta, params.ms_lambda, params.ms_epsilon
        )
    if params.loss in ("softmax", "ms+softmax"):
        loss += cosine_softmax_loss(labels, logits)
    return loss


def learning_rate(params: TrainParams, steps_per_epoch: int, world_size: int) -> Any:
    """Adam's learning rate for one rank: the configured rate times the world size, constant, or with
    `cosine` a linear warmup over the first WARMUP_SHARE of the steps, then cosine decay to zero. A
    function of the optimizer's step count, so a resumed run continues the same curve."""
    peak = params.learning_rate * world_size
    if params.lr_schedule == "constant":
        return peak
    total = params.epochs * steps_per_epoch
    warmup = int(WARMUP_SHARE * total)
    return tf.keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak,
        decay_steps=total - warmup,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def trained_variables(model: tf.keras.Model, params: TrainParams) -> list[tf.Variable]:
    """The head has no gradient under the multi-similarity loss alone, so it is left out then."""
    if params.loss == "ms":
        return [v for v in model.trainable_variables if "cosine_softmax" not in v.name]
    return list(model.trainable_variables)


def make_train_step(
    model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer, params: TrainParams, distributed: bool
) -> Any:
    variables = trained_variables(model, params)

    @tf.function
    def train_step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            embeddings, logits = model(images, training=True)
            loss = training_loss(params, labels, embeddings, logits)
        if distributed:
            import horovod.tensorflow as hvd

            tape = hvd.DistributedGradientTape(tape)
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return loss

    return train_step


def embed(embedder: tf.keras.Model, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return np.concatenate(
        [
            embedder(images[i : i + batch_size], training=False).numpy()
            for i in range(0, len(images), batch_size)
        ]
    )


def _leave_one_out_recall_at_1(embedder: tf.keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of validation items whose nearest other validation item (cosine) has the same label."""
    embeddings = embed(embedder, images)
    return recall_at_k(top_k(embeddings, embeddings, 1, exclude_self=True), labels, labels, 1)


def broadcast_initial_state(variables: list[tf.Variable]) -> None:
    """Every rank starts from rank 0's state: its fresh initial weights, or the checkpoint it restored."""
    import horovod.tensorflow as hvd

    hvd.broadcast_variables(variables, root_rank=0)


def _rank_and_size(distributed: bool) -> tuple[int, int]:
    if not distributed:
        return 0, 1
    import horovod.tensorflow as hvd

    hvd.init()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:  # one GPU per rank, by local rank
        tf.config.set_visible_devices(gpus[hvd.local_rank()], "GPU")
        tf.config.experimental.set_memory_growth(gpus[hvd.local_rank()], True)
    return hvd.rank(), hvd.size()


def _configure_process(job: TrainJob) -> None:
    os.environ.update(job.env)
    # petastorm 0.13 on pyarrow 14 warns about deprecated pyarrow APIs on every read
    warnings.filterwarnings("ignore", category=FutureWarning, module="petastorm")
    if job.threads:
        tf.config.threading.set_intra_op_parallelism_threads(job.threads)
        tf.config.threading.set_inter_op_parallelism_threads(job.threads)


@dataclass
class _Training:
    """A rank's model, optimizer and checkpoints, with the epochs done so far."""

    model: tf.keras.Model
    exported: tf.keras.Model  # what is validated and saved (and so evaluated and served)
    optimizer: tf.keras.optimizers.Optimizer
    epoch: tf.Variable
    saved_history: tf.Variable
    checkpoint: tf.train.Checkpoint
    manager: tf.train.CheckpointManager

    @classmethod
    def build(cls, job: TrainJob, size: int) -> _Training:
        params = job.params
        embedder, model = build_training_model(params)
        # the embedder with its inference options
        exported = inference_model(embedder, params.flip_average, params.pixel_weight, params.hog_weight)
        optimizer = tf.keras.optimizers.Adam(learning_rate(params, job.steps_per_epoch, size))
        optimizer.build(trained_variables(model, params))
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        # The history travels inside the checkpoint, so a checkpoint and its history are saved in one
        # atomic step: a process killed between writing one and the other cannot leave them disagreeing.
        saved_history = tf.Variable("[]", dtype=tf.string, trainable=False)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch, history=saved_history)
        manager = tf.train.CheckpointManager(checkpoint, job.checkpoint_dir, max_to_keep=2)
        return cls(model, exported, optimizer, epoch, saved_history, checkpoint, manager)

    def restore(self) -> list[dict[str, float]]:
        """The history of the latest checkpoint, restored with it (rank 0; the others get its state by
        broadcast)."""
        self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        return json.loads(self.saved_history.numpy().decode())


def run_training(job: TrainJob, distributed: bool) -> list[dict[str, float]] | None:
    """Trains; on rank 0 returns the per-epoch history (including epochs of a resumed run)."""
    _configure_process(job)
    rank, size = _rank_and_size(distributed)
    params = job.params
    tf.keras.utils.set_random_seed(params.seed + rank)
    training = _Training.build(job, size)
    history: list[dict[str, float]] = []
    logger = _MlflowLogger(job.mlflow_run_id) if rank == 0 else None
    if job.resume and training.manager.latest_checkpoint and rank == 0:
        history = training.restore()
        if logger:  # epochs checkpointed by a process killed before it logged them
            logger.log_missing(history)
    if distributed:
        broadcast_initial_state(training.model.variables + training.optimizer.variables + [training.epoch])
    train_step = make_train_step(training.model, training.optimizer, params, distributed)
    validation_images = job.validation.pixels() if rank == 0 else None

    with job.source(rank, size) as shard:
        batches = iter(training_batches(shard, params.augment, params.seed + rank))
        for current in range(int(training.epoch.numpy()), params.epochs):
            mean_loss, seconds = _train_epoch(job, train_step, batches, current, distributed)
            training.epoch.assign(current + 1)
            if rank != 0:
                continue
            record = {
                "epoch": current + 1,
                "train_loss": mean_loss,
                "val_recall_at_1": _leave_one_out_recall_at_1(
                    training.exported, validation_images, job.validation.labels
                ),
                "images_per_sec_per_worker": job.steps_per_epoch * params.batch_size / seconds,
                "epoch_seconds": seconds,
            }
            history.append(record)
            _save_epoch(job, training, history, logger)
    if rank != 0:
        return None
    crash_point("train:before-model-save")
    Path(job.model_dir).mkdir(parents=True, exist_ok=True)
    training.exported.save(Path(job.model_dir) / EMBEDDING_MODEL_FILE)
    return history


def _train_epoch(
    job: TrainJob,
    train_step: Callable[..., tf.Tensor],
    batches: Iterator[Any],
    current: int,
    distributed: bool,
) -> tuple[float, float]:
    """One epoch's steps: (mean loss over every rank, seconds). Raises TrialTimeout past the job's
    deadline, NonFiniteLoss on every rank when the loss is not finite."""
    started = time.perf_counter()
    losses = []
    for _ in range(job.steps_per_epoch):
        losses.append(float(train_step(*next(batches))))
        if job.deadline and time.time() > job.deadline:
            raise TrialTimeout(f"stopped in epoch {current + 1}: over the time limit")
    seconds = time.perf_counter() - started
    mean_loss = float(np.mean(losses))
    if distributed:
        import horovod.tensorflow as hvd

        mean_loss = float(hvd.allreduce(tf.constant(mean_loss), op=hvd.Average))
    if not np.isfinite(mean_loss):  # after the allreduce, so every rank stops together
        raise NonFiniteLoss(f"epoch {current + 1}: loss is {mean_loss}")
    return mean_loss, seconds


def _save_epoch(
    job: TrainJob, training: _Training, history: list[dict[str, float]], logger: _MlflowLogger | None
) -> None:
    """Rank 0, after each epoch: the checkpoint with the history, the history for people, the epoch's
    metrics in MLflow and a progress line."""
    record = history[-1]
    current = int(record["epoch"])
    training.saved_history.assign(json.dumps(history))
    training.manager.save(checkpoint_number=current)
    crash_point(f"train:after-checkpoint-{current}")
    write_json_atomic(Path(job.checkpoint_dir) / HISTORY_FILE, history)  # for people, not resume
    if logger:
        logger.log(record)
    print(
        f"epoch {current}/{job.params.epochs}: loss {record['train_loss']:.4f}, "
        f"val recall@1 {record['val_recall_at_1']:.4f}, "
        f"{record['images_per_sec_per_worker']:.0f} img/s per worker",
        flush=True,
    )


class _MlflowLogger:
    """Per-epoch metrics to the step's MLflow run while training runs (rank 0 only)."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id
        if run_id:
            from mlflow import MlflowClient

            self.client = MlflowClient()

    def log_missing(self, history: list[dict[str, float]]) -> None:
        if not self.run_id:
            return
        for key in history[0] if history else ():
            if key == "epoch":
                continue
            logged = {m.step for m in self.client.get_metric_history(self.run_id, key)}
            for record in history:
                if int(record["epoch"]) not in logged:
                    self.client.log_metric(self.run_id, key, record[key], step=int(record["epoch"]))

    def log(self, record: dict[str, float]) -> None:
        if not self.run_id:
            return
        step = int(record["epoch"])
        for key, value in record.items():
            if key != "epoch":
                self.client.log_metric(self.run_id, key, value, step=step)
