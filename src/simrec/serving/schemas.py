"""Request and response bodies. Unknown fields are refused (extra="forbid") so that a misspelt field
is an error instead of being silently ignored."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, model_validator

MAX_K = 100
MAX_BATCH = 64  # images or items per inference request
ItemId = Annotated[str, Field(min_length=1, max_length=200)]
Pixel = Annotated[StrictInt, Field(ge=0, le=255)]
# A base64 PNG of a 28x28 image is under 3 kB; the cap only stops absurd strings early.
Base64Png = Annotated[str, Field(min_length=1, max_length=200_000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- the friendly JSON route (the web page uses it) ---


class SimilarRequest(Strict):
    """Exactly one of item_id, image, pixels."""

    item_id: ItemId | None = Field(None, description="a catalogue item; the answer excludes the item itself")
    image: Base64Png | None = Field(None, description="base64 of an 8-bit grayscale 28x28 PNG")
    pixels: list[list[Pixel]] | None = Field(None, description="28 rows of 28 pixel values 0-255")
    k: Annotated[StrictInt, Field(ge=1, le=MAX_K)] = 5
    include_images: StrictBool = Field(False, description="add each answer's PNG (base64) for display")

    @model_validator(mode="after")
    def _one_query(self) -> SimilarRequest:
        given = [name for name in ("item_id", "image", "pixels") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of item_id, image, pixels (got {len(given)})")
        return self


class SimilarItem(BaseModel):
    item_id: str
    label: int | None = Field(description="class number; null for an unlabelled item")
    label_name: str | None
    score: float = Field(description="cosine similarity, 1 = identical embedding")
    image: str | None = Field(None, description="base64 PNG, when include_images was asked")


class SimilarResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    index_version: int
    items: list[SimilarItem]


class CatalogueItem(BaseModel):
    item_id: str
    label: int | None = Field(description="class number; null for an unlabelled item")
    label_name: str | None
    image: str = Field(description="base64 PNG")


class SampleResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    index_version: int
    catalogue_size: int
    items: list[CatalogueItem]


class ErrorResponse(BaseModel):
    error: str


# --- Open Inference Protocol v2 (shapes as in KServe's v2_datamodels.py) ---

InferParameter = StrictFloat | StrictInt | StrictBool | str


class RequestInput(Strict):
    name: str = Field(description="'image' (BYTES, base64 PNG), 'item_id' (BYTES) or 'pixels' (UINT8/INT*)")
    shape: list[StrictInt]
    datatype: str
    parameters: dict[str, InferParameter] | None = None
    data: list[Any]


class RequestOutput(Strict):
    name: str
    parameters: dict[str, InferParameter] | None = None


class InferenceRequest(Strict):
    id: str | None = None
    parameters: dict[str, InferParameter] | None = Field(None, description="'k': answers per query (1-100)")
    inputs: list[RequestInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, InferParameter] | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str | None = None
    id: str
    parameters: dict[str, InferParameter] | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str]


class LiveResponse(BaseModel):
    live: bool


class ReadyResponse(BaseModel):
    ready: bool


class ModelReadyResponse(BaseModel):
    name: str
    ready: bool


# --- admin ---


class DeployRequest(Strict):
    package: Annotated[str, Field(min_length=1, max_length=4096)] = Field(
        description="folder of a recommender package, as the server sees it"
    )
    version: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]


class NewItem(Strict):
    item_id: ItemId
    label: Annotated[StrictInt, Field(ge=0, le=1_000_000)] | None = Field(
        description="null (with label_name null) for an unlabelled item"
    )
    label_name: Annotated[str, Field(min_length=1, max_length=200)] | None
    image: Base64Png

    @model_validator(mode="after")
    def _labelled_or_not(self) -> NewItem:
        if (self.label is None) != (self.label_name is None):
            raise ValueError("label and label_name are both given or both null (an unlabelled item)")
        return self


class AddItemsRequest(Strict):
    items: list[NewItem] = Field(min_length=1, max_length=5000)


class AddItemsResponse(BaseModel):
    added: int
    skipped: int = Field(description="items the live index already held")
    index_version: int
    catalogue_size: int


class ItemIdsResponse(BaseModel):
    index_version: int
    item_ids: list[str]
