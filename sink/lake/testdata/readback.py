"""Independent reader for the lake sink's integration tests (pyarrow, not arrow-go).

usage: readback.py <dir>   where <dir> holds the lake's objects (dataset/date=/hour=/*.parquet)

Prints one JSON document: per dataset the Parquet column types (physical, logical) and Arrow
types seen in every file, the compression codecs and encodings used, the row count through a
Hive-partitioned dataset scan, and every row with timestamps as integer Unix microseconds.
"""
import glob
import json
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq

root = sys.argv[1]
out = {}
for ds_dir in sorted(glob.glob(os.path.join(root, "*"))):
    name = os.path.basename(ds_dir)
    if name.startswith("_") or not os.path.isdir(ds_dir):
        continue
    d = out.setdefault(name, {"files": 0, "columns": {}, "arrow": {}, "codecs": [], "dictionary": [], "rows": [], "row_groups": 0})
    for path in sorted(glob.glob(os.path.join(ds_dir, "date=*", "hour=*", "*.parquet"))):
        pf = pq.ParquetFile(path)
        d["files"] += 1
        d["row_groups"] += pf.metadata.num_row_groups
        for i in range(len(pf.schema)):
            c = pf.schema.column(i)
            d["columns"][c.name] = [c.physical_type, str(c.logical_type)]
        for f in pf.schema_arrow:
            d["arrow"][f.name] = str(f.type)
        rg = pf.metadata.row_group(0)
        for i in range(rg.num_columns):
            cc = rg.column(i)
            if cc.compression not in d["codecs"]:
                d["codecs"].append(cc.compression)
            if cc.has_dictionary_page and cc.path_in_schema not in d["dictionary"]:
                d["dictionary"].append(cc.path_in_schema)
        tbl = pf.read()
        cols = []
        for f in tbl.schema:
            col = tbl.column(f.name)
            if pa.types.is_timestamp(f.type):
                col = pc.cast(col, pa.int64())
            cols.append(col.to_pylist())
        rel = os.path.relpath(path, root)
        for row in zip(*cols):
            d["rows"].append(list(row) + [rel])
    d["names"] = [f.name for f in pf.schema_arrow] if d["files"] else []
    # Hive partition pruning view, as DuckDB/Spark/Athena see it.
    hive = pds.dataset(ds_dir, format="parquet", partitioning="hive")
    d["hive_fields"] = [f.name for f in hive.schema if f.name in ("date", "hour")]
    d["hive_rows"] = hive.count_rows()
json.dump(out, sys.stdout)
