"""components/<step>/README.md, generated from the component YAML so the two cannot drift
(tests/control/test_pipeline.py fails when a README is stale; `simrec docs` rewrites them)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from simrec.infra import paths

HEADER = "<!-- generated from component.yaml by `simrec docs`; edit the YAML, not this file -->"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ").strip()


def render(component_yaml: Path) -> str:
    spec = yaml.safe_load(component_yaml.read_text())
    container = spec["implementation"]["container"]
    lines = [
        HEADER,
        f"# {spec['name']}",
        "",
        spec.get("description", "").strip(),
        "",
        f"Image `{container['image']}`, command `{' '.join(container['command'])}`.",
        "",
        "## Inputs",
        "",
        "| name | type | default | description |",
        "|---|---|---|---|",
    ]
    for item in spec.get("inputs", []):
        default = (
            "(optional)"
            if item.get("optional") and "default" not in item
            else item.get("default", "required")
        )
        lines.append(
            f"| `{item['name']}` | {item['type']} | {_cell(default)} | {_cell(item.get('description', ''))} |"
        )
    lines += ["", "## Outputs", "", "| name | type | description |", "|---|---|---|"]
    for item in spec.get("outputs", []):
        lines.append(f"| `{item['name']}` | {item['type']} | {_cell(item.get('description', ''))} |")
    return "\n".join(lines) + "\n"


def component_yamls(components_dir: Path) -> list[Path]:
    return sorted(components_dir.glob("*/component.yaml"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="simrec docs", description="Regenerate components/*/README.md.")
    parser.add_argument("--components-dir", type=Path, default=paths.components_dir())
    args = parser.parse_args(argv)
    for path in component_yamls(args.components_dir):
        (path.parent / "README.md").write_text(render(path))
        print(f"wrote {path.parent / 'README.md'}")
