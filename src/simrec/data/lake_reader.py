"""Reads the catalogue Delta tables without Spark (delta-rs), where there is no Spark: the serve image's
`simrec refresh`. Same layout as simrec.data.lake (which needs pyspark): <lake_uri>/<table>."""

from __future__ import annotations

import pandas as pd

from simrec.infra.errors import DataError

COLUMNS = ["item_id", "label", "label_name", "image"]


def read_items(lake_uri: str, tables: tuple[str, ...]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every item of the tables (item_id, label, label_name, image PNG bytes), and each table's version."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    frames, versions = [], {}
    for name in tables:
        uri = f"{lake_uri.rstrip('/')}/{name}"
        try:
            table = DeltaTable(uri)
        except TableNotFoundError as exc:
            raise DataError(f"{uri}: no Delta table here") from exc
        versions[name] = table.version()
        frames.append(table.to_pyarrow_table(columns=COLUMNS).to_pandas())
    items = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    return items, versions
