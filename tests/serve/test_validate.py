"""The validate step in the serving environment: a package becomes an MLflow pyfunc that loads and answers
here, and a broken package stops the pipeline with one line and no model."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from packages import run_validate

from simrec.infra import paths
from simrec.infra.errors import InputError
from simrec.infra.files import folder_sha256
from simrec.recommender.package import INDEX_FILE, MANIFEST_FILE, MODEL_FILE, ONNX_FILE, Recommender
from simrec.recommender.pyfunc import OUTPUT_COLUMNS, image_query, item_query
from simrec.recommender.pyfunc_checks import ValidationFailed, lock_pins
from simrec.steps.validate import validate


@pytest.fixture(scope="module")
def package(packages) -> Path:
    return packages["v1"]  # only read here; the tests that break a package break a copy


@pytest.fixture(scope="module")
def validated(package, tmp_path_factory) -> tuple[Path, dict]:
    model = tmp_path_factory.mktemp("validated") / "model"
    return model, validate(package, model, paths.serve_lock()).model_dump(mode="json")  # as written


def _broken_copy(package: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(package, copy)
    return copy


def test_a_package_becomes_a_pyfunc_that_loads_and_answers_here(package, validated) -> None:
    import mlflow

    model_dir, record = validated
    assert record["ok"] and record["digest"] == folder_sha256(model_dir)
    assert [c["name"] for c in record["checks"]] == [
        "environment matches the serve lock",
        "sample requests",
        "save pyfunc",
        "load pyfunc",
        "input example",
        "smoke queries",
    ]
    # models from code: the code file is in the model, no pickled model object
    assert (model_dir / "pyfunc_model.py").is_file() and not list(model_dir.rglob("*.pkl"))
    assert (model_dir / "requirements.txt").read_text().split() == lock_pins(paths.serve_lock())
    assert folder_sha256(model_dir / "artifacts" / "package") == folder_sha256(package)

    model = mlflow.pyfunc.load_model(str(model_dir))
    recommender = Recommender(package)
    item = "item-00007"
    queries = pd.DataFrame([item_query(item), image_query(recommender.image(item))])
    answer = model.predict(queries, params={"k": 3})
    assert list(answer.columns) == OUTPUT_COLUMNS
    assert answer["query"].tolist() == [0, 0, 0, 1, 1, 1] and answer["rank"].tolist() == [1, 2, 3] * 2
    assert answer["item_id"][:3].tolist() == [n.item_id for n in recommender.similar_to_items([item], 3)[0]]
    assert answer["item_id"][3] == item  # an image's nearest item is the catalogue item it was taken from
    assert len(model.predict(queries)) == 2 * 5  # k defaults to 5 through the signature's params


@pytest.mark.parametrize(
    ("rows", "params", "message"),
    [
        ([{"image": None, "item_id": None}], {}, "row 0: give exactly one of image"),
        ([{"image": "aGVsbG8=", "item_id": "item-00001"}], {}, "row 0: give exactly one of image"),
        ([{"image": "not base64!", "item_id": None}], {}, "row 0: image is not base64"),
        ([{"image": "aGVsbG8=", "item_id": None}], {}, "row 0: not a readable image"),
        ([{"image": None, "item_id": "no-such-item"}], {}, "unknown item_id 'no-such-item'"),
        ([{"image": None, "item_id": "item-00001"}], {"k": 0}, "k must be an integer from 1 to 100"),
    ],
)
def test_bad_requests_are_refused_with_a_clear_message(validated, rows, params, message) -> None:
    import mlflow

    model = mlflow.pyfunc.load_model(str(validated[0]))
    with pytest.raises(InputError, match=message):
        model.predict(pd.DataFrame(rows), params=params)


def _corrupt_index(package: Path) -> None:
    (package / INDEX_FILE).write_bytes((package / INDEX_FILE).read_bytes()[:100])


def _replace_model(package: Path) -> None:
    data = bytearray((package / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (package / MODEL_FILE).write_bytes(bytes(data))


def _corrupt_onnx(package: Path) -> None:
    data = bytearray((package / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (package / ONNX_FILE).write_bytes(bytes(data))


def _edit_manifest(package: Path, change) -> None:
    manifest = json.loads((package / MANIFEST_FILE).read_text())
    change(manifest)
    (package / MANIFEST_FILE).write_text(json.dumps(manifest))


def _disagreeing_onnx(package: Path) -> None:
    """As if evaluate had measured the exported model off by more than the tolerance."""
    _edit_manifest(package, lambda manifest: manifest["onnx"]["agreement"].update(max_abs_diff=2e-4))


def _format_1(package: Path) -> None:
    """A package from before the ONNX export: Keras only."""
    (package / ONNX_FILE).unlink()
    _edit_manifest(package, lambda manifest: manifest.update(format=1) or manifest.pop("onnx"))


@pytest.mark.parametrize(
    ("damage", "failed_check", "reason"),
    [
        (_corrupt_index, "load pyfunc", ""),
        (_replace_model, "load pyfunc", "embedding.keras is not the model this package was built with"),
        (_corrupt_onnx, "load pyfunc", "embedding.onnx is not the model this package was built with"),
        (_disagreeing_onnx, "load pyfunc", r"differ by up to 0.0002 \(tolerance 0.0001\)"),
        (_format_1, None, "package format 1 has no embedding.onnx; re-export it with `simrec export-onnx"),
    ],
    ids=[
        "truncated index",
        "changed embedding model",
        "corrupt ONNX model",
        "disagreeing ONNX model",
        "format 1",
    ],
)
def test_a_broken_package_fails_validation_and_leaves_no_model(
    package, tmp_path, damage, failed_check, reason
) -> None:
    broken = _broken_copy(package, tmp_path)
    damage(broken)
    # Refused before any check (InputError) when the folder is not a package of this format at all.
    refused = (
        (ValidationFailed, f"check '{failed_check}' failed: .*{reason}")
        if failed_check
        else (InputError, reason)
    )
    with pytest.raises(refused[0], match=refused[1]):
        validate(broken, tmp_path / "model", paths.serve_lock())
    assert not (tmp_path / "model").exists()


def test_an_onnx_model_of_another_package_fails_on_the_smoke_queries(packages, tmp_path) -> None:
    """Recorded under its own hash, so it loads: only its answers can tell it is the wrong model."""
    mismatched = _broken_copy(packages["v1"], tmp_path)
    other = json.loads((packages["v2"] / MANIFEST_FILE).read_text())["onnx"]
    shutil.copyfile(packages["v2"] / ONNX_FILE, mismatched / ONNX_FILE)
    _edit_manifest(mismatched, lambda manifest: manifest["onnx"].update(sha256=other["sha256"]))
    with pytest.raises(ValidationFailed, match=r"check 'smoke queries' failed: .* smoke answer"):
        validate(mismatched, tmp_path / "model", paths.serve_lock())
    assert not (tmp_path / "model").exists()


def test_the_step_exits_with_one_line_when_a_smoke_answer_changed(package, tmp_path) -> None:
    broken = _broken_copy(package, tmp_path)
    manifest = json.loads((broken / MANIFEST_FILE).read_text())
    expected = manifest["smoke_queries"][0]["expected"]
    expected["by_item"] = expected["by_item"][::-1]  # the answers the package was built with, reordered
    (broken / MANIFEST_FILE).write_text(json.dumps(manifest))
    outputs = tmp_path / "outputs"
    result = run_validate(broken, outputs)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("simrec validate: error: check 'smoke queries' failed: 1 smoke answer(s) changed")
    assert "Traceback" not in result.stderr
    assert not (outputs / "model").exists() and not (outputs / "validation").exists()


def test_validation_refuses_an_environment_that_is_not_the_lock(package, tmp_path) -> None:
    lock = tmp_path / "requirements.txt"
    lock.write_text("numpy==0.0.1\n")
    with pytest.raises(ValidationFailed, match=r"differs from .*numpy==0.0.1 \(installed: 1\.26\.4\)"):
        validate(package, tmp_path / "model", lock)
    assert not (tmp_path / "model").exists()
