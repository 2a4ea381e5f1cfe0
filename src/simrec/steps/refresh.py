"""Refresh: sends the catalogue items a running server lacks (read from the Delta tables) to its live
index, without retraining; the server embeds them with the serving model as a new index version. It
speaks to the server's admin routes, with the admin token."""

from __future__ import annotations

import argparse
import base64
import json
import os

import pandas as pd

from simrec.data.lake_reader import read_items
from simrec.recommender import item_label
from simrec.serving.admin_client import call
from simrec.serving.cli import ADMIN_TOKEN_VARIABLE

BATCH = 500  # items per request: ~0.7 MB of base64 PNGs


def refresh(
    server_url: str, token: str | None, lake_uri: str, tables: tuple[str, ...] = ("train", "test")
) -> dict[str, object]:
    url = server_url.rstrip("/")
    known = set(call("GET", f"{url}/admin/items", token, timeout=60.0)["item_ids"])
    items, versions = read_items(lake_uri, tables)
    missing = items[~items["item_id"].isin(known)]
    result: dict[str, object] = {
        "tables": versions,
        "catalogue": len(items),
        "sent": len(missing),
        "added": 0,
    }
    added = 0
    for start in range(0, len(missing), BATCH):
        batch = missing.iloc[start : start + BATCH]
        body = {"items": [_item(row) for row in batch.itertuples(index=False)]}
        answer = call("POST", f"{url}/admin/items", token, body, timeout=600.0)
        added += answer["added"]
        result |= {
            "added": added,
            "index_version": answer["index_version"],
            "served_items": answer["catalogue_size"],
        }
    return result


def _item(row: pd.Series) -> dict[str, object]:
    label, label_name = item_label(row.label, row.label_name)  # both None for an unlabelled item
    return {
        "item_id": row.item_id,
        "label": label,
        "label_name": label_name,
        "image": base64.b64encode(row.image).decode("ascii"),
    }


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
