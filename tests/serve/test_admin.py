"""Hot swap, rollback and live catalogue additions, driven through simrec.serving.admin_client (the
client the deploy and refresh steps use) against a real server process."""

from __future__ import annotations

import os
import shutil
import threading

import pandas as pd
import pytest
from conftest import ADMIN_TOKEN, TOKEN
from pngs import hostile_images, pattern, png
from serve_helpers import b64

from simrec.serving.admin_client import DeployError, add_missing_items, deploy, rollback
from simrec.serving.state import PACKAGE_REFUSED


def answer(server, item_id: str = "item-00007") -> tuple[str, list[str]]:
    response = server.post("/similar", json={"item_id": item_id, "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["model_version"], [n["item_id"] for n in body["items"]]


def test_deploy_refused_then_swap_and_rollback(admin_server, packages):
    server = admin_server
    url = server.url
    version_1 = answer(server)
    assert version_1[0] == "1"
    with pytest.raises(DeployError, match=r"409.*no previous version"):
        rollback(url, ADMIN_TOKEN)

    refusals = {
        "bad-smoke": "smoke queries answer differently",
        "bad-model": "package",  # the corrupt model file: not loadable / not the model the package names
    }
    for name, reason in refusals.items():
        with pytest.raises(DeployError, match=reason):
            deploy(url, ADMIN_TOKEN, packages[name], "2")
        assert answer(server) == version_1, f"{name}: the old version must keep answering"
    with pytest.raises(DeployError, match="401"):
        deploy(url, "wrong-token", packages["v2"], "2")
    with pytest.raises(DeployError, match=r"403.*query token does not open the admin routes"):
        deploy(url, TOKEN, packages["v2"], "2")

    # Queries keep being answered, each wholly by one version, while version 2 loads and takes over.
    seen: list[tuple[str, list[str]]] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            seen.append(answer(server))

    asker = threading.Thread(target=ask)
    asker.start()
    try:
        result = deploy(url, ADMIN_TOKEN, packages["v2"], "2")
    finally:
        stop.set()
        asker.join()
    assert result["outcome"] == "serving" and result["serving"]["version"] == "2"
    version_2 = answer(server)
    assert version_2[0] == "2" and version_2[1] != version_1[1]
    assert version_1 in seen and all(s in (version_1, version_2) for s in seen)
    # item-00250 exists only in version 1's catalogue (300 items; version 2 has 200).
    assert server.post("/similar", json={"item_id": "item-00250"}).status_code == 404
    assert deploy(url, ADMIN_TOKEN, packages["v2"], "2")["outcome"] == "unchanged"

    back = rollback(url, ADMIN_TOKEN)
    assert back["serving"]["version"] == "1"
    assert answer(server) == version_1
    assert server.post("/similar", json={"item_id": "item-00250"}).status_code == 200
    assert rollback(url, ADMIN_TOKEN)["serving"]["version"] == "2"
    assert answer(server) == version_2

    status = server.get("/admin/status").json()
    assert status["current"]["version"] == "2" and status["previous"]["version"] == "1"
    outcomes = [(h["action"], h["version"], h["outcome"]) for h in reversed(status["history"])]
    assert outcomes == [
        ("deploy", "1", "serving"),
        ("rollback", None, "refused"),
        ("deploy", "2", "refused"),
        ("deploy", "2", "refused"),
        ("deploy", "2", "serving"),
        ("deploy", "2", "unchanged"),
        ("rollback", "1", "serving"),
        ("rollback", "2", "serving"),
    ]
    assert "smoke" in status["history"][-3]["reason"]


def test_new_items_become_retrievable(admin_server, packages, tmp_path):
    server = admin_server
    new_png = png(pattern(11))
    before = server.post("/similar", json={"image": b64(new_png), "k": 3}).json()
    assert before["index_version"] == 1 and "new-1" not in [n["item_id"] for n in before["items"]]

    item = {"item_id": "new-1", "label": 8, "label_name": "Bag", "image": b64(new_png)}
    added = server.post("/admin/items", json={"items": [item]})
    assert added.json() == {"added": 1, "skipped": 0, "index_version": 2, "catalogue_size": 301}
    after = server.post("/similar", json={"image": b64(new_png), "k": 3}).json()
    assert after["index_version"] == 2
    assert after["items"][0]["item_id"] == "new-1" and after["items"][0]["score"] == pytest.approx(
        1, abs=1e-4
    )
    assert after["items"][0]["label_name"] == "Bag"
    assert server.get("/items/new-1/image").content == new_png
    assert server.post("/admin/items", json={"items": [item]}).json()["added"] == 0  # idempotent

    broken = item | {"item_id": "new-2", "image": b64(png(pattern(1), mode="RGB"))}
    response = server.post("/admin/items", json={"items": [broken]})
    assert response.status_code == 400 and "new-2" in response.json()["error"]
    assert server.get("/admin/items").json()["index_version"] == 2

    # refresh's client: the catalogue holds three items the server has and two it lacks; only those two
    # are sent (tests/steps/test_unlabelled_items.py runs `simrec refresh` on a real Delta lake).
    v1_items = pd.read_parquet(packages["v1"] / "items.parquet")
    fresh = pd.DataFrame(
        {
            "item_id": ["lake-1", "lake-2"],
            "label": [0, 5],
            "label_name": ["T-shirt/top", "Sandal"],
            "image": [png(pattern(21)), png(pattern(22))],
        }
    )
    catalogue = pd.concat([v1_items.iloc[:3], fresh], ignore_index=True)
    result = add_missing_items(server.url, ADMIN_TOKEN, catalogue)
    assert result["sent"] == 2 and result["added"] == 2 and result["index_version"] == 3
    for row in fresh.itertuples():
        assert server.similar(image=b64(row.image), k=1) == [row.item_id]
    assert add_missing_items(server.url, ADMIN_TOKEN, catalogue)["sent"] == 0  # nothing left to send

    # Items added live survive a deploy (re-embedded by the new model) and a rollback.
    deploy(server.url, ADMIN_TOKEN, packages["v2"], "2")
    assert server.similar(image=b64(new_png), k=1) == ["new-1"]
    rollback(server.url, ADMIN_TOKEN)
    assert server.similar(image=b64(png(pattern(22))), k=1) == ["lake-2"]


def test_unlabelled_items_are_indexed_and_answered_with_null_labels(admin_server, tmp_path):
    server = admin_server
    unlabelled, labelled = png(pattern(31)), png(pattern(32))
    fresh = pd.DataFrame(
        {
            "item_id": ["lake-u1", "lake-l1"],
            "label": pd.array([None, 5], dtype="Int32"),
            "label_name": [None, "Sandal"],
            "image": [unlabelled, labelled],
        }
    )
    result = add_missing_items(server.url, ADMIN_TOKEN, fresh)
    assert result["added"] == 2

    found = server.post("/similar", json={"image": b64(unlabelled), "k": 2}).json()["items"]
    assert found[0]["item_id"] == "lake-u1"
    assert (found[0]["label"], found[0]["label_name"]) == (None, None)  # sent as null, not left out
    assert "image" not in found[0]
    v2 = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(unlabelled)]}
    outputs = server.post("/v2/models/simrec/infer", json={"inputs": [v2], "parameters": {"k": 1}}).json()
    columns = {o["name"]: o["data"] for o in outputs["outputs"]}
    assert (columns["item_id"], columns["label"], columns["label_name"]) == (["lake-u1"], [-1], [""])
    samples = (server.get("/items/sample", params={"n": 100, "seed": seed}).json() for seed in range(20))
    shown = next(i for sample in samples for i in sample["items"] if i["item_id"] == "lake-u1")
    assert (shown["label"], shown["label_name"]) == (None, None)

    half = {"item_id": "half", "label": None, "label_name": "Bag", "image": b64(labelled)}
    response = server.post("/admin/items", json={"items": [half]})
    assert response.status_code in (400, 422) and "both given or both null" in response.text


def test_packages_load_only_from_the_package_root(admin_server, packages, tmp_path):
    """A valid package outside the root, reached by an absolute path, by '..' or through a symbolic link
    inside the root, is refused with the same answer as a missing folder or a broken package: nothing
    tells the caller what exists on the server."""
    server = admin_server
    root = packages["v1"].parent
    outside = shutil.copytree(packages["v2"], tmp_path / "outside-v2")
    link = root / "link-to-outside"
    link.symlink_to(outside)
    try:
        attempts = [
            str(outside),
            os.path.relpath(outside, root),  # ../../... from the root
            str(root / ".." / root.name / ".." / outside.parent.name / outside.name),
            link.name,
            "/etc",
            "/nowhere",
            "no-such-package",
            ".",
            str(packages["bad-model"]),
        ]
        answers = [server.post("/admin/deploy", json={"package": p, "version": "9"}) for p in attempts]
    finally:
        link.unlink()
    assert {(a.status_code, a.json()["error"]) for a in answers} == {(400, PACKAGE_REFUSED)}
    assert answer(server)[0] == "1"
    # inside the root, relative or absolute, the same package loads
    assert server.post("/admin/deploy", json={"package": "v2", "version": "2"}).json()["outcome"] == "serving"
    assert deploy(server.url, ADMIN_TOKEN, packages["v2"], "2")["outcome"] == "unchanged"
    log = server.log.read_text()
    # the reasons are in the server's own log
    assert f"is outside {root}" in log and f"package {packages['bad-model']} refused" in log


def test_hostile_images_are_refused_by_live_additions(admin_server):
    """/admin/items decodes each new item's PNG: every hostile image is a 400 naming the item, and
    nothing is added; the 28x28 gray ones among them are added."""
    server = admin_server
    for number, (name, (data, message)) in enumerate(hostile_images().items()):
        item = {"item_id": f"hostile-{number}", "label": 1, "label_name": "x", "image": b64(data)}
        response = server.post("/admin/items", json={"items": [item]})
        if message is None:
            assert response.status_code == 200 and response.json()["added"] == 1, (name, response.text)
        else:
            assert response.status_code == 400, (name, response.text)
            error = response.json()["error"]
            assert message in error and f"hostile-{number}" in error, (name, error)
    added = [i for i in server.get("/admin/items").json()["item_ids"] if i.startswith("hostile-")]
    assert len(added) == sum(message is None for _, message in hostile_images().values())
