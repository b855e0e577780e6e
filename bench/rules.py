"""``python -m bench.rules``: what a filter expression costs per request, at 12K and 1M items.

The expression is bound to fresh parameters and evaluated over the catalog table each time,
as the ranker does for a request that names a filter (its table is built once per catalog
version and model, so building it is reported apart). Beside it: the request's built-in
filter (``RowFilter.mask``) and the exact scoring of the same catalog, for scale.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from shopstream.catalog.v1 import catalog_pb2

from bench.report import machine, table, write
from services.common.filters import CatalogMasks, ItemFilter, RowFilter
from services.common.stores.catalog import CatalogSnapshot
from services.rules.evaluate import Interactions, ItemTable, eligible
from services.rules.language import parse

EXPRESSIONS = {
    "price+brand": ("EXCLUDE ItemID WHERE Items.price > $max AND Items.brand IN ($brands)",
                    {"max": 50.0, "brands": ["brand-1", "brand-2", "brand-3"]}),
    "category+stock+purchased": ('INCLUDE ItemID WHERE Items.category IN ($cats) AND Items.in_stock = true '
                                 '| EXCLUDE ItemID WHERE Interactions.type IN ("purchase")',
                                 {"cats": [f"cat-{i}" for i in range(5)]}),
}


def catalog(n: int, rng) -> tuple[list[str], CatalogSnapshot]:
    ids = [f"item-{i}" for i in range(n)]
    cats, brands, prices, stock = rng.integers(0, 50, n), rng.integers(0, 500, n), rng.uniform(1, 100, n), rng.random(n)
    items = {i: catalog_pb2.CatalogItem(item_id=i, category=f"cat-{c}", brand=f"brand-{b}", price=float(p),
                                        in_stock=bool(s > 0.1))
             for i, c, b, p, s in zip(ids, cats.tolist(), brands.tolist(), prices.tolist(), stock.tolist())}
    return ids, CatalogSnapshot(1, items)


def timed(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rules", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[12_101, 1_000_000])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(3)
    rows = []
    for n in args.sizes:
        ids, snapshot = catalog(n, rng)
        repeat = max(3, (200 if args.quick else 1000) * 12_000 // n)
        t0 = time.perf_counter()
        items = ItemTable.build(ids, snapshot)
        build_s = time.perf_counter() - t0
        masks = CatalogMasks.build(ids, snapshot)
        index_of = {item: i for i, item in enumerate(ids, start=1)}
        builtin = RowFilter.build(masks, index_of, ItemFilter(include_categories=frozenset({"cat-1", "cat-2"})))
        embeddings = rng.standard_normal((n + 1, 64), dtype=np.float32)
        user = rng.standard_normal(64, dtype=np.float32)
        exact_s = timed(lambda: embeddings @ user, repeat)
        builtin_s = timed(builtin.mask, repeat)
        bought = Interactions(purchased=set(rng.choice(ids, 20).tolist()))
        for name, (text, params) in EXPRESSIONS.items():
            expression = parse(text)
            cost = timed(lambda: eligible(expression.bind(params), items, bought), repeat)
            rows.append({"items": n, "expression": name, "filter_ms": cost * 1e3, "builtin_filter_ms": builtin_s * 1e3,
                         "exact_scoring_ms": exact_s * 1e3, "filter_vs_scoring": cost / exact_s,
                         "table_build_s": build_s})
    print(table(rows, ["items", "expression", "filter_ms", "builtin_filter_ms", "exact_scoring_ms",
                       "filter_vs_scoring", "table_build_s"]))
    print(f"wrote {write('rules', {'machine': machine(), 'rows': rows, 'expressions': {k: v[0] for k, v in EXPRESSIONS.items()}})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
