"""Each component YAML's flags are exactly its step's command-line flags: input `snake_case` is passed as
`--snake-case`, output `name` as `--name-out`."""

import importlib
import itertools
from pathlib import Path

import pytest
import yaml

from simrec.cli import SUBCOMMANDS

COMPONENTS = sorted((Path(__file__).resolve().parents[2] / "components").glob("*/component.yaml"))


def _flags_and_values(args: list) -> list[tuple[str, object]]:
    pairs, flat = [], []
    for arg in args:
        flat.extend(arg["if"]["then"] if isinstance(arg, dict) and "if" in arg else [arg])
    for flag, value in itertools.pairwise(flat):
        if isinstance(flag, str) and flag.startswith("--"):
            pairs.append((flag, value))
    return pairs


@pytest.mark.parametrize("path", COMPONENTS, ids=lambda p: p.parent.name)
def test_yaml_flags_match_the_step_parser(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    container = spec["implementation"]["container"]
    assert container["command"][0] == "simrec"
    module_name, _ = SUBCOMMANDS[container["command"][1]][0].split(":")
    parser = importlib.import_module(module_name).build_parser()
    by_hand = [g for g in parser._action_groups if g.title == "by hand"]  # not for the pipeline
    manual = {s for group in by_hand for action in group._group_actions for s in action.option_strings}
    parser_flags = {
        s for action in parser._actions for s in action.option_strings if s.startswith("--")
    } - manual
    pairs = _flags_and_values(container["args"])
    assert {flag for flag, _ in pairs} == parser_flags - {"--help"}
    for flag, value in pairs:
        ((kind, name),) = value.items()
        if kind == "executorInput":  # KFP's whole executor input ({{$}}), for output metadata
            assert flag == "--executor-input"
            continue
        expected = "--" + name.replace("_", "-") + ("-out" if kind == "outputPath" else "")
        assert flag == expected, f"{path}: {flag} carries {kind} {name}"
    required = {s for a in parser._actions if a.required for s in a.option_strings}
    declared = {i["name"]: i for i in spec.get("inputs", [])}
    for flag, value in pairs:
        ((kind, name),) = value.items()
        if flag in required and kind == "inputValue":
            assert not declared[name].get("optional"), f"{path}: {name} is required by the CLI"
