"""Fuzz: well over 1,000 malformed requests (fixed seed, mutations of valid requests and plain garbage)
against a real server. None may get a 5xx or a non-JSON error, and the server must answer exactly as
before afterwards. Hand-built, beside the schemathesis run (test_schemathesis.py): the mutations also
cover what an OpenAPI description cannot express (hostile PNG bytes, lying content types and lengths)."""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from typing import Any

import requests
from pngs import bad_images, hostile_images, pattern, png

SEED = 20261127
COUNT = 1200
# Images that must be refused (so no fuzzed /admin/items request can change the catalogue): the plain
# bad ones and the hostile ones (bombs, oversized chunks, odd modes, damaged files).
REFUSED_IMAGES = [data for data, _ in bad_images().values()] + [
    data for data, message in hostile_images().values() if message is not None
]
PATHS = [
    "/similar",
    "/v2/models/simrec/infer",
    "/v2/models/simrec",
    "/v2/models/simrec/ready",
    "/v2/models/Simrec/infer",
    "/items/sample",
    "/items/item-00001/image",
    "/admin/deploy",
    "/admin/rollback",
    "/admin/status",
    "/admin/items",
    "/v2",
    "/",
    "/nowhere",
]


def junk(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value."""
    kinds = ["int", "float", "str", "bool", "null", "bigint"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.randint(-300, 300)
    if kind == "bigint":
        return rng.choice([10**30, -(10**30), 2**63, 2**64 + 1])
    if kind == "float":
        return rng.choice([0.5, -1.0, 1e308, 3.0, 255.0])
    if kind == "str":
        return rng.choice(
            ["", "x", "item-00001", "\u2603" * 5, "A" * rng.randint(1, 300), "data:image/png;base64,"]
        )
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [junk(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {
        rng.choice(["k", "image", "item_id", "pixels", "x", "inputs"]): junk(rng, depth + 1) for _ in range(3)
    }


def bad_png_b64(rng: random.Random) -> str:
    good = bytearray(png(pattern(rng.randint(0, 5))))
    choice = rng.randint(0, 3)
    if choice == 0:  # flipped bytes inside a real PNG (often a CRC or zlib error)
        for _ in range(rng.randint(1, 8)):
            good[rng.randrange(len(good))] ^= 0xFF
        data = bytes(good)
    elif choice == 1:
        data = rng.choice(REFUSED_IMAGES)
    elif choice == 2:
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
    else:
        data = bytes(good[: rng.randint(0, len(good))])
    text = base64.b64encode(data).decode()
    return text[: rng.randint(0, len(text))] if rng.random() < 0.2 else text


def similar_body(rng: random.Random) -> Any:
    body: dict[str, Any] = {"item_id": "item-00001", "k": 5}
    for _ in range(rng.randint(1, 3)):
        field = rng.choice(["item_id", "image", "pixels", "k", "include_images", "extra"])
        if field == "image":
            body.pop("item_id", None)
            body["image"] = bad_png_b64(rng) if rng.random() < 0.7 else junk(rng)
        elif field == "pixels":
            body.pop("item_id", None)
            rows, cols = rng.choice([(28, 28), (27, 28), (28, 29), (0, 0), (1, 784)])
            body["pixels"] = [
                [rng.choice([0, 255, 256, -1, 1.5, "7", None]) for _ in range(cols)] for _ in range(rows)
            ]
        else:
            body[field] = junk(rng)
    return body


def v2_body(rng: random.Random) -> Any:
    """A valid v2 request with one or two parts replaced, so each mutation reaches the code behind the
    schema check instead of being stopped by another mutation first."""
    valid_png = base64.b64encode(png(pattern(rng.randint(0, 3)))).decode()
    tensor: dict[str, Any] = rng.choice(
        [
            {"name": "image", "shape": [1], "datatype": "BYTES", "data": [valid_png]},
            {"name": "item_id", "shape": [1], "datatype": "BYTES", "data": ["item-00001"]},
            {"name": "pixels", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784},
        ]
    )
    body: dict[str, Any] = {"inputs": [tensor], "parameters": {"k": 5}}
    for _ in range(rng.randint(1, 2)):
        part = rng.choice(
            ["name", "shape", "datatype", "data", "k", "outputs", "id", "inputs", "drop", "extra"]
        )
        if part == "name":
            tensor["name"] = rng.choice(["image", "item_id", "pixels", "other", "", junk(rng)])
        elif part == "shape":
            tensor["shape"] = rng.choice(
                [[2], [0], [-1], [1, 28, 28], [28, 28], [65], [1, 1], [10**12], [], junk(rng)]
            )
        elif part == "datatype":
            tensor["datatype"] = rng.choice(
                ["BYTES", "UINT8", "INT64", "FP32", "BOOL", "bytes", "", junk(rng)]
            )
        elif part == "data":
            tensor["data"] = rng.choice(
                [
                    [bad_png_b64(rng)],
                    ["no-such-item"],
                    [300] * 784,
                    [[0] * 28] * 27,
                    [junk(rng)],
                    [],
                    [[[[[[1]]]]]],
                ]
            )
        elif part == "k":
            body["parameters"] = {"k": junk(rng)} if rng.random() < 0.8 else junk(rng)
        elif part == "outputs":
            body["outputs"] = rng.choice([[{"name": junk(rng)}], [{"name": "score", "x": 1}], junk(rng)])
        elif part == "id":
            body["id"] = junk(rng)
        elif part == "inputs":
            body["inputs"] = rng.choice([[], [tensor, tensor], junk(rng)])
        elif part == "drop":
            tensor.pop(rng.choice(list(tensor)), None)
        else:
            body[rng.choice(["input", "params", "k"])] = junk(rng)
    return body


def request(rng: random.Random) -> dict[str, Any]:
    """One malformed request, as keyword arguments for requests.request."""
    family = rng.randint(0, 6)
    method, path, data, headers = "POST", rng.choice(PATHS), None, {"content-type": "application/json"}
    if family <= 1:
        path, data = "/similar", json.dumps(similar_body(rng)).encode()
    elif family == 2:
        path, data = "/v2/models/simrec/infer", json.dumps(v2_body(rng)).encode()
    elif family == 3:  # broken JSON text: cut, spliced, deeply nested, not UTF-8
        text = json.dumps(rng.choice([similar_body, v2_body])(rng)).encode()
        data = rng.choice(
            [
                text[: rng.randint(0, len(text))],
                text + b"}",
                b"[" * 50_000,
                b"\xff\xfe\x00garbage",
                b"{" * 10 + b"}",
            ]
        )
    elif family == 4:  # wrong or lying headers
        data = json.dumps(similar_body(rng)).encode()
        headers = rng.choice(
            [
                {
                    "content-type": rng.choice(
                        ["text/plain", "image/png", "multipart/form-data", "", "application/jsonx"]
                    )
                },
                {"content-type": "application/json", "content-length": rng.choice(["99999999", "-1", "abc"])},
                {
                    "content-type": "application/json",
                    "authorization": rng.choice(["Bearer ", "Basic abc", "bearer x"]),
                },
            ]
        )
    elif family == 5:  # methods and query strings on every route
        method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "POST"])
        query = rng.choice(
            ["", "?n=0", "?n=-5", "?n=abc", "?n=100000", "?seed=x", "?n=3&seed=99999999999999999999"]
        )
        path += query
        data = json.dumps(junk(rng)).encode() if method in ("PUT", "PATCH", "POST") else None
    else:  # admin bodies that must be refused without changing what is served
        path = rng.choice(["/admin/deploy", "/admin/items"])
        if path == "/admin/deploy":
            data = json.dumps(
                {"package": rng.choice(["/", "/tmp", "", "../..", junk(rng)]), "version": junk(rng)}
            )
        else:
            bad = {"item_id": junk(rng), "label": junk(rng), "label_name": "x", "image": bad_png_b64(rng)}
            data = json.dumps({"items": rng.choice([[bad], [], junk(rng)])})
        data = data.encode()
    return {"method": method, "path": path, "data": data, "headers": headers}


def test_fuzz_never_5xx(server):
    before = server.post("/similar", json={"item_id": "item-00123", "k": 10}).json()
    rng = random.Random(SEED)
    statuses: Counter[int] = Counter()
    failures = []
    with requests.Session() as session:
        for number in range(COUNT):
            spec = request(rng)
            headers = dict(spec["headers"])
            if "authorization" not in {h.lower() for h in headers}:  # each plane's own token
                token = server.admin_token if spec["path"].startswith("/admin/") else server.token
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = session.request(
                    spec["method"], server.url + spec["path"], data=spec["data"], headers=headers, timeout=30
                )
            except requests.ConnectionError:  # e.g. a lying content-length: the client gives up, fine
                statuses[0] += 1
                continue
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append((number, spec, response.status_code, response.text[:300]))
            elif response.status_code >= 400 and not response.json().get("error"):
                failures.append((number, spec, response.status_code, "no JSON error message"))
    print(dict(sorted(statuses.items())))
    assert not failures, failures[:5]
    assert sum(count for status, count in statuses.items() if 400 <= status < 500) >= 1000
    assert server.process.poll() is None
    assert server.post("/similar", json={"item_id": "item-00123", "k": 10}).json() == before
    assert server.get("/admin/status").json()["current"]["version"] == "1"
