"""The web page (public) and the friendly JSON routes it calls (query token): similar items for an image
or a catalogue item, a random sample of the catalogue, an item's picture."""

from __future__ import annotations

import random
from typing import Annotated

import pandas as pd
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from simrec.data.codec import png_base64
from simrec.recommender.package import item_label
from simrec.serving import schemas as s
from simrec.serving.inputs import Query as ItemQuery
from simrec.serving.inputs import finite, pixels_from_base64, pixels_from_rows
from simrec.serving.routes.context import BatcherDep, PageDep, StateDep, answer, bearer, serving

page = APIRouter()
router = APIRouter(tags=["similar"], dependencies=[bearer])


@page.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(page_html: PageDep) -> HTMLResponse:
    return HTMLResponse(page_html)


def _item_query(request: s.SimilarRequest) -> ItemQuery:
    if request.item_id is not None:
        return ItemQuery(item_ids=[request.item_id])
    if request.image is not None:
        return ItemQuery(pixels=pixels_from_base64(request.image)[None])
    return ItemQuery(pixels=pixels_from_rows(request.pixels)[None])


# exclude_unset, not exclude_none: an unlabelled item's null label is sent; an image only when asked.
@router.post("/similar", response_model_exclude_unset=True)
async def similar(request: s.SimilarRequest, state: StateDep, batcher: BatcherDep) -> s.SimilarResponse:
    served = serving(state)
    query = _item_query(request)
    recommender = served.recommender
    items = [
        s.SimilarItem(
            item_id=n.item_id,
            label=n.label,
            label_name=n.label_name,
            score=finite(n.score),
            **({"image": png_base64(recommender.image(n.item_id))} if request.include_images else {}),
        )
        for n in (await answer(batcher, served, query, request.k))[0]
    ]
    return s.SimilarResponse(
        model_name=state.model_name,
        model_version=served.version,
        index_version=served.index_version,
        items=items,
    )


def _catalogue_item(items: pd.DataFrame, row: int) -> s.CatalogueItem:
    label, label_name = item_label(items["label"].iat[row], items["label_name"].iat[row])
    return s.CatalogueItem(
        item_id=str(items["item_id"].iat[row]),
        label=label,
        label_name=label_name,
        image=png_base64(bytes(items["image"].iat[row])),
    )


@router.get("/items/sample")
def sample(
    state: StateDep,
    n: Annotated[int, Query(ge=1, le=100)] = 24,
    seed: Annotated[int | None, Query()] = None,
) -> s.SampleResponse:
    """Random catalogue items with their images (the page's picking grid)."""
    served = serving(state)
    items = served.recommender.items
    rows = random.Random(seed).sample(range(len(items)), min(n, len(items)))
    return s.SampleResponse(
        model_version=served.version,
        index_version=served.index_version,
        catalogue_size=len(items),
        items=[_catalogue_item(items, r) for r in rows],
    )


@router.get(
    "/items/{item_id}/image", response_class=Response, responses={200: {"content": {"image/png": {}}}}
)
def item_image(item_id: str, state: StateDep) -> Response:
    recommender = serving(state).recommender
    if item_id not in recommender.rows.index:
        raise HTTPException(404, f"unknown item_id {item_id!r}")
    return Response(recommender.image(item_id), media_type="image/png")
