"""The embedded runner on a small pipeline of test components (tests/control/components)."""

import json
import shutil
from pathlib import Path

import pytest
from kfp import compiler, components, dsl

from simrec import paths
from simrec.errors import InputError
from simrec.runner.embedded import EmbeddedRunner, environment_for
from simrec.runner.ir import load_ir

HERE = Path(__file__).parent


def _compile(tmp_path: Path, components_dir: Path = HERE / "components", cache: bool = True) -> Path:
    make_op = components.load_component_from_file(str(components_dir / "make" / "component.yaml"))
    consume_op = components.load_component_from_file(str(components_dir / "consume" / "component.yaml"))

    @dsl.pipeline(name="runner-test")
    def pipeline(text: str = "hello") -> None:
        made = make_op(text=text)
        consumed = consume_op(data=made.outputs["data"], length=made.outputs["length"])
        made.set_caching_options(cache)
        consumed.set_caching_options(cache)

    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return path


@pytest.fixture
def runner(tmp_path: Path) -> EmbeddedRunner:
    lines: list[str] = []
    runner = EmbeddedRunner(envs_dir=paths.envs_dir(), runs_dir=tmp_path / "runs", echo=lines.append)
    runner.lines = lines  # type: ignore[attr-defined]
    return runner


def test_artifacts_and_parameters_flow_between_tasks(runner, tmp_path) -> None:
    summary = runner.run(load_ir(_compile(tmp_path)), {"text": "shoes"}, run_name="r1")
    assert summary.succeeded
    make, consume = summary.tasks
    assert (make.name, make.parameters) == ("make", {"length": 5})
    assert Path(consume.artifacts["report"]).read_text() == "shoes:5"
    assert "made shoes" in (tmp_path / "runs" / "r1" / "make" / "log.txt").read_text()
    recorded = json.loads((tmp_path / "runs" / "r1" / "run.json").read_text())
    assert [t["status"] for t in recorded["tasks"]] == ["succeeded", "succeeded"]


def test_unchanged_tasks_are_cached_and_changed_ones_rerun(runner, tmp_path) -> None:
    ir = load_ir(_compile(tmp_path))
    runner.run(ir, {"text": "bag"}, run_name="first")
    second = runner.run(ir, {"text": "bag"}, run_name="second")
    assert [t.status for t in second.tasks] == ["cached", "cached"]
    assert Path(second.tasks[1].artifacts["report"]).read_text() == "bag:3"
    third = runner.run(ir, {"text": "bags"}, run_name="third")
    assert [t.status for t in third.tasks] == ["succeeded", "succeeded"]


def test_tasks_with_caching_off_always_run(runner, tmp_path) -> None:
    ir = load_ir(_compile(tmp_path, cache=False))
    runner.run(ir, {}, run_name="a")
    assert [t.status for t in runner.run(ir, {}, run_name="b").tasks] == ["succeeded", "succeeded"]


def test_failure_skips_downstream_and_is_reported(runner, tmp_path) -> None:
    summary = runner.run(load_ir(_compile(tmp_path)), {"text": "fail"}, run_name="bad")
    assert not summary.succeeded
    assert [t.status for t in summary.tasks] == ["failed", "skipped"]
    assert "exit code 1" in summary.tasks[0].error and "asked to fail" in summary.tasks[0].error


def test_edited_component_default_changes_the_run(runner, tmp_path) -> None:
    edited = tmp_path / "components"
    shutil.copytree(HERE / "components", edited)
    yaml_path = edited / "make" / "component.yaml"
    yaml_path.write_text(
        yaml_path.read_text().replace(
            "{name: suffix, type: String, optional: true}", "{name: suffix, type: String, default: '!'}"
        )
    )
    summary = runner.run(load_ir(_compile(tmp_path, edited)), {"text": "hat"}, run_name="edited")
    assert Path(summary.tasks[1].artifacts["report"]).read_text() == "hat!:4"


def test_bad_arguments_are_refused(runner, tmp_path) -> None:
    ir = load_ir(_compile(tmp_path))
    with pytest.raises(InputError, match=r"unknown pipeline parameter.*colour"):
        runner.run(ir, {"colour": "red"})


def test_missing_environment_is_named(tmp_path) -> None:
    with pytest.raises(
        InputError, match=r"simrec/gpu:0.1.0: .*gpu is missing \(run scripts/setup-envs gpu\)"
    ):
        environment_for("registry.local/simrec/gpu:0.1.0", tmp_path)


def test_broken_ir_is_refused(tmp_path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("components: {}\n")
    with pytest.raises(InputError, match="no pipeline spec"):
        load_ir(path)
    path.write_text("a: [")
    with pytest.raises(InputError, match="cannot read the compiled pipeline"):
        load_ir(path)
