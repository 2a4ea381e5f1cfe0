"""The endpoint over real HTTP: auth, the friendly route, the Open Inference Protocol v2, every kind of
bad input (4xx with a JSON message, never 5xx), and answers equal to the package's own."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests
from conftest import ADMIN_TOKEN
from pngs import bad_images, hostile_images, pattern, png
from serve_helpers import b64, bearer

from simrec.data.codec import decode_png
from simrec.serving.state import PACKAGE_REFUSED


def test_probes_page_description_and_metrics_need_no_token(server):
    for path in ("/v2/health/live", "/v2/health/ready", "/", "/openapi.json", "/metrics"):
        assert requests.get(server.url + path, timeout=10).status_code == 200, path
    paths = requests.get(server.url + "/openapi.json", timeout=10).json()["paths"]
    assert {"/similar", "/v2/models/{model_name}/infer", "/admin/deploy", "/admin/rollback"} <= set(paths)
    # no Swagger UI or ReDoc: they load scripts from a CDN on the origin where the page keeps its token
    for path in ("/docs", "/redoc"):
        assert server.get(path).status_code == 404, path


def admin_routes(server) -> list[tuple[str, str]]:
    """Every (method, path) under /admin/ that the server describes."""
    paths = requests.get(server.url + "/openapi.json", timeout=10).json()["paths"]
    return [(method, path) for path, item in paths.items() if path.startswith("/admin/") for method in item]


def test_each_plane_takes_only_its_own_token(server):
    routes = admin_routes(server)
    assert {path for _, path in routes} == {
        "/admin/deploy",
        "/admin/rollback",
        "/admin/status",
        "/admin/items",
    }
    body = {"package": "x", "version": "1", "items": []}
    for method, path in routes:
        for token, status in ((server.token, 403), (None, 401), ("wrong", 401)):
            response = requests.request(
                method, server.url + path, json=body, headers=bearer(token), timeout=10
            )
            assert response.status_code == status, (method, path, token, response.text)
        answer = requests.request(method, server.url + path, json=body, headers=server.admin_auth, timeout=10)
        assert answer.status_code not in (401, 403, 404), (method, path, answer.text)
    # and the admin token does not query (so it is never the one the web page keeps)
    response = requests.post(
        server.url + "/similar", json={"item_id": "item-00001"}, headers=server.admin_auth
    )
    assert (
        response.status_code == 403
        and "admin token does not open the query routes" in response.json()["error"]
    )


def test_admin_routes_are_off_without_an_admin_token(server, plain_server):
    assert not [
        path for path in requests.get(plain_server.url + "/openapi.json").json()["paths"] if "admin" in path
    ]
    for method, path in admin_routes(server):
        for token in (plain_server.token, ADMIN_TOKEN, None):
            response = requests.request(
                method, plain_server.url + path, json={}, headers=bearer(token), timeout=10
            )
            assert response.status_code == 404, (method, path, token, response.text)
            assert "admin routes are off" in response.json()["error"]
    assert plain_server.similar(item_id="item-00001", k=2)  # the query plane answers as usual


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/similar"),
        ("post", "/v2/models/simrec/infer"),
        ("get", "/v2/models/simrec"),
        ("get", "/items/item-00001/image"),
        ("get", "/admin/status"),
        ("post", "/admin/rollback"),
    ],
)
def test_token_required(server, method, path):
    body = {"item_id": "item-00001"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": server.token}):
        response = requests.request(method, server.url + path, json=body, headers=headers, timeout=10)
        assert response.status_code == 401, (headers, response.text)
        assert "bearer token" in response.json()["error"]
        assert response.headers["www-authenticate"] == "Bearer"


def test_similar_by_item_image_and_pixels(server, packages):
    import pandas as pd

    items = pd.read_parquet(packages["v1"] / "items.parquet")
    item = items.iloc[7]
    by_item = server.post("/similar", json={"item_id": item["item_id"], "k": 4}).json()
    assert by_item["model_name"] == "simrec" and by_item["model_version"] == "1"
    assert by_item["index_version"] == 1
    assert len(by_item["items"]) == 4 and item["item_id"] not in [n["item_id"] for n in by_item["items"]]
    assert set(by_item["items"][0]) == {"item_id", "label", "label_name", "score"}
    # The item's own image finds the item first (cosine 1), then the same neighbours as by item.
    by_image = server.similar(image=b64(item["image"]), k=5)
    assert by_image[0] == item["item_id"]
    pixels = decode_png(item["image"]).tolist()
    assert server.similar(pixels=pixels, k=5) == by_image
    assert server.similar(image="data:image/png;base64," + b64(item["image"]), k=5) == by_image
    with_images = server.post("/similar", json={"item_id": item["item_id"], "include_images": True}).json()
    first = with_images["items"][0]
    assert base64.b64decode(first["image"]) == bytes(
        items.set_index("item_id").loc[first["item_id"], "image"]
    )


def test_answers_equal_the_package(server, packages):
    from simrec.recommender.package import Recommender

    recommender = Recommender(packages["v1"])
    ids = ["item-00003", "item-00100", "item-00299"]
    expected = recommender.similar_to_items(ids, 6)
    for item_id, answer in zip(ids, expected, strict=True):
        assert server.similar(item_id=item_id, k=6) == [n.item_id for n in answer]
    image = png(pattern(3))
    assert server.similar(image=b64(image), k=6) == [
        n.item_id for n in recommender.similar_to_pixels(decode_png(image)[None], 6)[0]
    ]


def test_item_image_and_sample(server, packages):
    import pandas as pd

    items = pd.read_parquet(packages["v1"] / "items.parquet").set_index("item_id")
    response = server.get("/items/item-00042/image")
    assert response.headers["content-type"] == "image/png"
    assert response.content == bytes(items.loc["item-00042", "image"])
    sample = server.get("/items/sample?n=5&seed=1").json()
    assert sample["catalogue_size"] == 300 and len(sample["items"]) == 5
    assert sample == server.get("/items/sample?n=5&seed=1").json()


def test_open_inference_protocol_v2(server, packages):
    import pandas as pd

    items = pd.read_parquet(packages["v1"] / "items.parquet")
    assert server.get("/v2").json()["name"] == "simrec"
    metadata = server.get("/v2/models/simrec").json()
    assert metadata["versions"] == ["1"]
    assert {t["name"] for t in metadata["inputs"]} == {"image", "item_id", "pixels"}
    assert server.get("/v2/models/simrec/ready").json() == {"name": "simrec", "ready": True}

    def infer(tensor: dict, **extra) -> dict:
        response = server.post("/v2/models/simrec/infer", json={"inputs": [tensor], **extra})
        assert response.status_code == 200, response.text
        return response.json()

    pngs = [bytes(items["image"].iat[i]) for i in (1, 2)]
    answer = infer(
        {"name": "image", "shape": [2], "datatype": "BYTES", "data": [b64(p) for p in pngs]},
        id="req-1",
        parameters={"k": 3},
    )
    assert answer["model_name"] == "simrec" and answer["model_version"] == "1" and answer["id"] == "req-1"
    assert answer["parameters"] == {"index_version": 1}
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert {name: (o["datatype"], o["shape"]) for name, o in outputs.items()} == {
        "item_id": ("BYTES", [2, 3]),
        "label": ("INT32", [2, 3]),
        "label_name": ("BYTES", [2, 3]),
        "score": ("FP32", [2, 3]),
    }
    assert outputs["item_id"]["data"][0] == items["item_id"].iat[1]
    assert outputs["item_id"]["data"][3] == items["item_id"].iat[2]
    assert outputs["score"]["data"][0] == pytest.approx(1.0, abs=1e-4)
    # The same images as UINT8 pixels, nested or flat, answer the same.
    pixels = np.stack([decode_png(p) for p in pngs])
    for data in (pixels.tolist(), pixels.ravel().tolist()):
        same = infer(
            {"name": "pixels", "shape": [2, 28, 28], "datatype": "UINT8", "data": data}, parameters={"k": 3}
        )
        assert same["outputs"][0]["data"] == outputs["item_id"]["data"]
    by_item = infer(
        {"name": "item_id", "shape": [1], "datatype": "BYTES", "data": ["item-00001"]},
        outputs=[{"name": "score"}],
    )
    assert [o["name"] for o in by_item["outputs"]] == ["score"] and by_item["outputs"][0]["shape"] == [1, 5]


GOOD = {"item_id": "item-00001", "k": 5}
V2 = "/v2/models/simrec/infer"


def v2(name="image", shape=(1,), datatype="BYTES", data=("x",), **extra) -> dict:
    return {
        "inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": list(data)}],
        **extra,
    }


BAD_REQUESTS = [
    # (name, path, body (dict: JSON; bytes: raw), headers, status, message part)
    ("no body", "/similar", None, {}, 422, "body"),
    ("malformed JSON", "/similar", b'{"item_id": ', {}, 400, "malformed JSON"),
    ("JSON array", "/similar", [1, 2], {}, 422, "body"),
    (
        "text/plain",
        "/similar",
        json.dumps(GOOD).encode(),
        {"content-type": "text/plain"},
        415,
        "application/json",
    ),
    (
        "form",
        "/similar",
        b"item_id=x",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "content type",
    ),
    ("too large", "/similar", {"image": "A" * 1_100_000}, {}, 413, "limit"),
    ("not base64", "/similar", {"image": "%%%not base64%%%"}, {}, 400, "not valid base64"),
    ("k zero", "/similar", {"item_id": "item-00001", "k": 0}, {}, 422, "k"),
    ("k 101", "/similar", {"item_id": "item-00001", "k": 101}, {}, 422, "less than or equal to 100"),
    ("k string", "/similar", {"item_id": "item-00001", "k": "5"}, {}, 422, "k"),
    ("k float", "/similar", {"item_id": "item-00001", "k": 2.5}, {}, 422, "k"),
    ("two queries", "/similar", {"item_id": "item-00001", "image": "AAAA"}, {}, 422, "exactly one"),
    ("no query", "/similar", {"k": 3}, {}, 422, "exactly one"),
    ("unknown field", "/similar", {"item_id": "item-00001", "top": 3}, {}, 422, "top"),
    ("unknown item", "/similar", {"item_id": "no-such-item"}, {}, 404, "unknown item_id"),
    ("pixels 27 rows", "/similar", {"pixels": [[0] * 28] * 27}, {}, 400, "28 rows"),
    ("pixels 29 wide", "/similar", {"pixels": [[0] * 29] * 28}, {}, 400, "28 rows of 28"),
    ("pixel 256", "/similar", {"pixels": [[256] * 28] * 28}, {}, 422, "less than or equal to 255"),
    ("pixel negative", "/similar", {"pixels": [[-1] * 28] * 28}, {}, 422, "greater than or equal to 0"),
    ("v2 unknown model", "/v2/models/other/infer", v2(data=["x"]), {}, 404, "unknown model"),
    ("v2 no inputs", V2, {"inputs": []}, {}, 422, "inputs"),
    ("v2 unknown input", V2, v2(name="picture"), {}, 400, "unknown input"),
    ("v2 image as FP32", V2, v2(datatype="FP32"), {}, 400, "BYTES"),
    ("v2 shape mismatch", V2, v2(shape=(2,), data=["AAAA"]), {}, 400, "does not match the shape"),
    ("v2 batch too big", V2, v2(shape=(65,), data=["AAAA"] * 65), {}, 400, "batch size"),
    ("v2 bad base64", V2, v2(data=["***"]), {}, 400, "not valid base64"),
    ("v2 image not PNG", V2, v2(data=[b64(b"GIF89a")]), {}, 400, "not a readable image"),
    ("v2 pixels wrong shape", V2, v2("pixels", (1, 28, 27), "UINT8", [0] * 756), {}, 400, "[n, 28, 28]"),
    ("v2 pixels floats", V2, v2("pixels", (1, 28, 28), "UINT8", [0.5] * 784), {}, 400, "integer 0-255"),
    ("v2 pixels 300", V2, v2("pixels", (28, 28), "INT32", [300] * 784), {}, 400, "integer 0-255"),
    ("v2 pixels too few", V2, v2("pixels", (1, 28, 28), "UINT8", [0] * 700), {}, 400, "does not match"),
    ("v2 pixels datatype", V2, v2("pixels", (1, 28, 28), "FP32", [0] * 784), {}, 400, "integer type"),
    ("v2 item unknown", V2, v2("item_id", data=["nope"]), {}, 404, "unknown item_id"),
    ("v2 k string", V2, v2("item_id", data=["item-00001"], parameters={"k": "3"}), {}, 400, "parameter k"),
    ("v2 k 0", V2, v2("item_id", data=["item-00001"], parameters={"k": 0}), {}, 400, "parameter k"),
    (
        "v2 bad output",
        V2,
        v2("item_id", data=["item-00001"], outputs=[{"name": "x"}]),
        {},
        400,
        "unknown output",
    ),
    ("v2 deep nesting", V2, v2("pixels", (1, 28, 28), "UINT8", [[[[[[0]]]]]]), {}, 400, "nested too deeply"),
    ("deploy no version", "/admin/deploy", {"package": "/tmp"}, {}, 422, "version"),
    ("deploy bad label", "/admin/deploy", {"package": "/tmp", "version": "a b/c"}, {}, 422, "version"),
    (
        "deploy missing dir",
        "/admin/deploy",
        {"package": "/nowhere", "version": "9"},
        {},
        400,
        PACKAGE_REFUSED,
    ),
    ("deploy outside root", "/admin/deploy", {"package": "/tmp", "version": "9"}, {}, 400, PACKAGE_REFUSED),
    ("deploy escape", "/admin/deploy", {"package": "../..", "version": "9"}, {}, 400, PACKAGE_REFUSED),
    # found by schemathesis: a name longer than the file system allows made resolving it raise
    (
        "deploy name too long",
        "/admin/deploy",
        {"package": "0" * 4096, "version": "9"},
        {},
        400,
        PACKAGE_REFUSED,
    ),
    ("deploy NUL byte", "/admin/deploy", {"package": "v1\u0000", "version": "9"}, {}, 400, PACKAGE_REFUSED),
]


@pytest.mark.parametrize(
    "name, path, body, headers, status, message", BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS]
)
def test_bad_request(server, name, path, body, headers, status, message):
    if isinstance(body, bytes):
        kwargs = {"data": body, "headers": {"content-type": "application/json"} | headers}
    else:
        kwargs = {"json": body, "headers": headers} if body is not None else {"headers": headers}
    response = server.post(path, **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize("kind", list(bad_images()))
def test_bad_images(server, kind):
    data, message = bad_images()[kind]
    response = server.post("/similar", json={"image": b64(data)})
    if not data:  # an empty string fails the request schema before any decoding
        status, message = 422, "at least 1 character"
    else:
        status = 400
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    response = server.post(V2, json=v2(data=[b64(data)]))
    assert response.status_code == 400 and response.json()["error"]


@pytest.mark.parametrize("kind", list(hostile_images()))
def test_hostile_images(server, kind):
    """Decompression bombs, oversized metadata, odd modes and depths, damaged files: a 400 with the reason
    on both image routes (/admin/items: test_admin.py), or an answer for a 28x28 gray image among them."""
    data, message = hostile_images()[kind]
    for response in (
        server.post("/similar", json={"image": b64(data)}),
        server.post(V2, json=v2(shape=(2,), data=[b64(png(pattern(1))), b64(data)])),
    ):
        if message is None:
            assert response.status_code == 200, response.text
        else:
            assert response.status_code == 400, response.text
            assert message in response.json()["error"]


def test_a_body_over_the_limit_is_a_413_even_for_a_client_still_sending(server):
    """The server reads the rest of the refused body before answering, so a plain client that sends the
    whole body before reading gets the 413 rather than a reset connection."""
    import urllib.error
    import urllib.request

    body = json.dumps(v2(data=["A" * (3 << 20)])).encode()
    for _ in range(5):
        request = urllib.request.Request(
            server.url + V2, data=body, headers={"Content-Type": "application/json", **server.auth}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 413 and "limit" in json.loads(refused.value.read())["error"]


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("get", "/similar", 405),
        ("get", "/no/such/route", 404),
        ("get", "/items/no-such-item/image", 404),
        ("get", "/items/sample?n=0", 422),
        ("get", "/items/sample?n=abc", 422),
        ("get", "/v2/models/other", 404),
        ("delete", "/admin/status", 405),
    ],
)
def test_bad_routes(server, method, path, status):
    response = server.request(method, path, timeout=10)
    assert response.status_code == status and response.json()["error"]


def test_concurrent_image_queries_each_get_their_own_answer(server):
    """Concurrent image queries are batched into one model call; each must still get its own answer,
    with its own k."""
    from concurrent.futures import ThreadPoolExecutor

    queries = [(b64(png(pattern(seed))), 1 + seed % 7) for seed in range(24)]
    alone = [server.similar(image=image, k=k) for image, k in queries]

    def ask(query: tuple[str, int]) -> list[str]:
        with requests.Session() as session:
            response = session.post(
                server.url + "/similar",
                json={"image": query[0], "k": query[1]},
                headers=server.auth,
                timeout=30,
            )
            return [item["item_id"] for item in response.json()["items"]]

    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(ask, queries))
    assert together == alone
    assert [len(answer) for answer in together] == [k for _, k in queries]
