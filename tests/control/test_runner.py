"""The embedded runner on a small pipeline of test components (tests/control/components)."""

import json
import shutil
from pathlib import Path

import pytest
from kfp import compiler, components, dsl

from simrec.infra import paths
from simrec.infra.errors import InputError
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


def _compile_fan_out(tmp_path: Path, cache_make: bool) -> Path:
    """make -> consume (its artifact and parameter) and make -> echo (its parameter only)."""
    ops = {
        name: components.load_component_from_file(str(HERE / "components" / name / "component.yaml"))
        for name in ("make", "consume", "echo")
    }

    @dsl.pipeline(name="fan-out")
    def pipeline(text: str = "hello") -> None:
        made = ops["make"](text=text)
        made.set_caching_options(cache_make)
        ops["consume"](data=made.outputs["data"], length=made.outputs["length"])
        ops["echo"](length=made.outputs["length"])

    path = tmp_path / "fan-out.yaml"
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
            '{name: suffix, type: String, default: ""}', "{name: suffix, type: String, default: '!'}"
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


def test_cache_follows_kfp_artifacts_by_execution_parameters_by_value(runner, tmp_path) -> None:
    """As on KFP: a task that consumes an artifact re-made by a task that ran again runs again (the artifact
    is new, whatever its content); one that consumes only an unchanged parameter value is cached."""
    uncached = load_ir(_compile_fan_out(tmp_path, cache_make=False))
    runner.run(uncached, {"text": "coat"}, run_name="u1")
    second = {t.name: t.status for t in runner.run(uncached, {"text": "coat"}, run_name="u2").tasks}
    assert second == {"make": "succeeded", "consume": "succeeded", "echo": "cached"}
    # a cached producer hands on the execution it reused, so its consumers are cached too
    cached = load_ir(_compile_fan_out(tmp_path, cache_make=True))
    runner.run(cached, {"text": "coat"}, run_name="c1")
    third = runner.run(cached, {"text": "coat"}, run_name="c2")
    assert [t.status for t in third.tasks] == ["cached", "cached", "cached"]
    assert third.tasks[0].root == str(tmp_path / "runs" / "c1" / "make")


def test_a_changed_image_lock_reruns_its_tasks(tmp_path) -> None:
    images = tmp_path / "images"
    shutil.copytree(paths.images_dir() / "control", images / "control")
    runner = EmbeddedRunner(paths.envs_dir(), tmp_path / "runs", echo=lambda _: None, images_dir=images)
    ir = load_ir(_compile(tmp_path))
    runner.run(ir, {"text": "cap"}, run_name="a")
    assert [t.status for t in runner.run(ir, {"text": "cap"}, run_name="b").tasks] == ["cached", "cached"]
    lock = images / "control" / "requirements.txt"
    lock.write_text(lock.read_text() + "# a new pin\n")
    assert [t.status for t in runner.run(ir, {"text": "cap"}, run_name="c").tasks] == ["succeeded"] * 2


def test_quiet_output_shows_progress_lines_and_a_failed_tasks_tail(runner, tmp_path) -> None:
    runner.run(load_ir(_compile(tmp_path)), {"text": "scarf"}, run_name="quiet")
    assert "  make | progress: made scarf" in runner.lines
    assert not any(line.endswith("| made scarf") for line in runner.lines)  # in log.txt only
    assert "made scarf" in (tmp_path / "runs" / "quiet" / "make" / "log.txt").read_text()
    runner.lines.clear()
    runner.run(load_ir(_compile(tmp_path)), {"text": "fail"}, run_name="failed")
    assert "  make | a detail that explains the failure" in runner.lines  # no one-line error: the tail


def test_verbose_output_shows_everything(tmp_path) -> None:
    lines: list[str] = []
    runner = EmbeddedRunner(paths.envs_dir(), tmp_path / "runs", echo=lines.append, verbose=True)
    runner.run(load_ir(_compile(tmp_path)), {"text": "belt"}, run_name="v")
    assert "  make | made belt" in lines and "  make | simrec> progress: made belt" in lines


def test_a_used_run_name_is_refused(runner, tmp_path) -> None:
    ir = load_ir(_compile(tmp_path))
    runner.run(ir, {"text": "sock"}, run_name="same")
    with pytest.raises(InputError, match=r"run name 'same' is already used .*choose another"):
        runner.run(ir, {"text": "sock"}, run_name="same")


def test_a_steps_one_line_error_is_the_tasks_error(runner, tmp_path) -> None:
    summary = runner.run(load_ir(_compile(tmp_path)), {"text": "bad"}, run_name="bad")
    assert summary.tasks[0].error.startswith("simrec make: error: bad text (exit code 2, log: ")
    assert not any("noise before the error" in line for line in runner.lines)
