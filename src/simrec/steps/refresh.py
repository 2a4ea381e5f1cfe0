"""Refresh: sends the catalogue items a running server lacks (read from the Delta tables) to its live
index, without retraining; the server embeds them with the serving model as a new index version. It
speaks to the server's admin routes, with the admin token. It runs in the steps image, which reads Delta
tables (the serve image carries no Delta or Arrow reader)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from simrec.data.lake_reader import read_items
from simrec.serving.admin_client import add_missing_items
from simrec.serving.cli import ADMIN_TOKEN_VARIABLE


def refresh(
    server_url: str, token: str | None, lake_uri: str, tables: tuple[str, ...] = ("train", "test")
) -> dict[str, Any]:
    items, versions = read_items(lake_uri, tables)
    return {"tables": versions} | add_missing_items(server_url, token, items)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simrec refresh", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server", required=True, help=f"server URL (admin token from ${ADMIN_TOKEN_VARIABLE})"
    )
    parser.add_argument("--lake-uri", required=True, help="root folder of the catalogue Delta tables")
    parser.add_argument("--tables", default="train,test", help="tables to read (default train,test)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    tables = tuple(name.strip() for name in args.tables.split(",") if name.strip())
    print(
        json.dumps(
            refresh(args.server, os.environ.get(ADMIN_TOKEN_VARIABLE), args.lake_uri, tables), indent=2
        )
    )
