"""The Open Inference Protocol v2, as KServe speaks it: health probes (public), server and model metadata
and inference (query token)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from simrec.infra.errors import InputError
from simrec.recommender.package import Neighbour
from simrec.serving import schemas as s
from simrec.serving.inputs import finite, k_parameter, v2_query
from simrec.serving.routes.context import BatcherDep, StateDep, answer, bearer, model

PLATFORMS = {"onnx": "simrec-onnxruntime-faiss", "keras": "simrec-tensorflow-faiss"}  # by runtime
OUTPUTS = ("item_id", "label", "label_name", "score")

router = APIRouter(tags=["v2"])


@router.get("/v2/health/live")
async def live() -> s.LiveResponse:
    return s.LiveResponse(live=True)


@router.get("/v2/health/ready", responses={503: {"model": s.ReadyResponse}})
async def ready(state: StateDep) -> Any:
    if state.current is None:
        return JSONResponse({"ready": False}, status_code=503)
    return s.ReadyResponse(ready=True)


@router.get("/v2", dependencies=[bearer])
async def server_metadata() -> s.ServerMetadataResponse:
    return s.ServerMetadataResponse(name="simrec", version="1", extensions=[])


@router.get("/v2/models/{model_name}", dependencies=[bearer])
async def model_metadata(model_name: str, state: StateDep) -> s.ModelMetadataResponse:
    served = model(state, model_name)
    tensor = s.MetadataTensor
    return s.ModelMetadataResponse(
        name=model_name,
        versions=[served.version],
        platform=PLATFORMS[state.runtime],
        inputs=[
            tensor(name="image", datatype="BYTES", shape=[-1]),
            tensor(name="item_id", datatype="BYTES", shape=[-1]),
            tensor(name="pixels", datatype="UINT8", shape=[-1, 28, 28]),
        ],
        outputs=[
            tensor(name="item_id", datatype="BYTES", shape=[-1, -1]),
            tensor(name="label", datatype="INT32", shape=[-1, -1]),
            tensor(name="label_name", datatype="BYTES", shape=[-1, -1]),
            tensor(name="score", datatype="FP32", shape=[-1, -1]),
        ],
    )


@router.get("/v2/models/{model_name}/ready", dependencies=[bearer])
async def model_ready(model_name: str, state: StateDep) -> s.ModelReadyResponse:
    model(state, model_name)
    return s.ModelReadyResponse(name=model_name, ready=True)


def _output_tensors(answers: list[list[Neighbour]], wanted: list[str]) -> list[s.ResponseOutput]:
    """The answers as one tensor per output, cut to the shortest row (a tensor is rectangular)."""
    width = min(len(row) for row in answers)
    rows = [row[:width] for row in answers]
    shape = [len(rows), width]
    columns = {
        "item_id": ("BYTES", [n.item_id for row in rows for n in row]),
        # A typed tensor has no null: an unlabelled item is label -1 with an empty label_name.
        "label": ("INT32", [-1 if n.label is None else n.label for row in rows for n in row]),
        "label_name": ("BYTES", [n.label_name or "" for row in rows for n in row]),
        "score": ("FP32", [finite(n.score) for row in rows for n in row]),
    }
    return [
        s.ResponseOutput(name=name, shape=shape, datatype=datatype, data=data)
        for name, (datatype, data) in columns.items()
        if not wanted or name in wanted
    ]


@router.post("/v2/models/{model_name}/infer", dependencies=[bearer], response_model_exclude_none=True)
async def infer(
    model_name: str, request: s.InferenceRequest, state: StateDep, batcher: BatcherDep
) -> s.InferenceResponse:
    served = model(state, model_name)
    k = k_parameter(request.parameters)
    wanted = [output.name for output in request.outputs or []]
    unknown = sorted(set(wanted) - set(OUTPUTS))
    if unknown:
        raise InputError(f"unknown output {unknown[0]!r}; outputs are item_id, label, label_name, score")
    answers = await answer(batcher, served, v2_query(request.inputs[0]), k)
    return s.InferenceResponse(
        model_name=model_name,
        model_version=served.version,
        id=request.id or str(uuid.uuid4()),
        parameters={"index_version": served.index_version},
        outputs=_output_tensors(answers, wanted),
    )
