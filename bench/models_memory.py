"""Memory per loaded model version: ``python -m bench.models_memory [--quick]``.

The ranker holds the live model and candidates at once (docs/ranker.md, "Several model
versions"). This publishes three SASRec bundles of the Beauty shape (random weights, L=50,
D=64) per catalog size, loads them one after another through the ranker's own
``ModelHolder`` (LATEST, then each one published with ``publish_candidate``), and reports
per model what ``ListModels`` reports (the accounted bytes, services/ranker/memory.py)
beside the growth of this process's resident memory (RSS) over that load, measured with
nothing else running, after a garbage collection and ``malloc_trim``, and beside what the
accounting leaves out on purpose, the vocabulary's Python objects (the id list and strings,
the id -> index dicts: ``sys.getsizeof``), to show what remains unexplained.
Then it promotes the newest candidate with ``set_live`` and times the switch (no reload: it
is loaded already).

Prints a table and writes bench/results/models_memory.json.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import tempfile
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from bench.report import table, write
from services.common.bundle import publish_candidate, set_live, write_bundle
from services.ranker.memory import model_memory
from services.ranker.metrics import ranker_metrics
from services.ranker.model_holder import ModelHolder
from services.ranker.settings import RankerSettings
from services.training.export import export_onnx
from services.training.model import ModelConfig, SASRec

MAX_LEN = 50
DIM = 64
MODELS = 3
MB = 1 << 20


def rss_bytes() -> int:
    """This process's resident memory now, after a collection and giving freed heap back to the OS."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figure keeps whatever the allocator holds
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def publish(models_dir: Path, items: int, seed: int, live: bool) -> str:
    """A random-weight SASRec over ``items`` items, exported and published as a bundle."""
    torch.manual_seed(seed)
    model = SASRec(ModelConfig(num_items=items, max_len=MAX_LEN, dim=DIM)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "encoder.onnx"
        export_onnx(model, onnx_path)
        with torch.no_grad():
            table_ = model.output_embeddings().numpy()
        version, _ = write_bundle(models_dir, onnx_path, table_, [f"i{n}" for n in range(1, items + 1)],
                                  {"max_len": MAX_LEN, "trainer": "bench", "seed": seed}, live=live)
    return version


def vocabulary_bytes(model) -> int:
    """The Python objects of a model's vocabulary: id lists, their strings, id -> index dicts."""
    bundle, items = model.bundle, model.items
    lists = {id(x): x for x in (bundle.item_ids, items.item_ids)}
    dicts = {id(x): x for x in (bundle.index_of, items.index_of, bundle.attribute_index_of)}
    strings = {id(i): i for ids in lists.values() for i in ids}
    return sum(map(sys.getsizeof, [*lists.values(), *dicts.values(), *strings.values()]))


async def measure(items: int, root: Path) -> list[dict]:
    models_dir = root / f"models-{items}"
    versions = [publish(models_dir, items, seed, live=seed == 0) for seed in range(MODELS)]
    settings = RankerSettings.model_construct(prefer_gpu=False)
    executor = ThreadPoolExecutor(settings.executor_threads, thread_name_prefix="ranker-score")
    encode_pool = ThreadPoolExecutor(settings.ort_threads, thread_name_prefix="ranker-encode")
    holder = ModelHolder(models_dir, executor, ranker_metrics(), scoring=settings.scoring_config(),
                         encode_pool=encode_pool, max_models=MODELS)
    rows = []
    try:
        for n, version in enumerate(versions):
            if n:
                publish_candidate(models_dir, version)
            before = rss_bytes()
            start = time.perf_counter()
            assert await holder.poll_once(), f"{version} did not load"
            load_s = time.perf_counter() - start
            grown = rss_bytes() - before
            model = holder.models.models[version]
            memory, vocab = model_memory(model), vocabulary_bytes(model)
            rows.append({"catalog": items, "version": version, "role": holder.models.role(version),
                         "load_s": load_s, "embedding_mb": memory.embedding_bytes / MB,
                         "session_mb": memory.session_bytes / MB, "accounted_mb": memory.total_bytes / MB,
                         "rss_growth_mb": grown / MB, "vocabulary_mb": vocab / MB,
                         "unexplained_mb": (grown - memory.total_bytes - vocab) / MB,
                         "rss_over_accounted": grown / memory.total_bytes})
        set_live(models_dir, versions[-1])
        start = time.perf_counter()
        assert await holder.poll_once()
        switch_s = time.perf_counter() - start
        assert holder.current.version == versions[-1]
        rows.append({"catalog": items, "version": versions[-1], "role": "promoted (set_live)", "load_s": switch_s})
    finally:
        executor.shutdown(wait=True)
        encode_pool.shutdown(wait=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.models_memory", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the Beauty-size catalog only (12,101 items)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    sizes = (12_101,) if args.quick else (12_101, 100_000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for items in sizes:
            rows += asyncio.run(measure(items, Path(tmp)))
    print(table(rows, ["catalog", "role", "load_s", "embedding_mb", "session_mb", "accounted_mb", "rss_growth_mb",
                       "vocabulary_mb", "unexplained_mb", "rss_over_accounted"]))
    path = write("models_memory", {"quick": args.quick, "max_len": MAX_LEN, "dim": DIM, "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
