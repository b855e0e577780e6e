"""What the serve and ingest benchmarks run against: a real model bundle and real users.

The model is ``--models-dir`` if given, else ``/tmp/shopstream-models`` (a
Beauty-trained bundle) when present, else one trained now on a generated
dataset (3 epochs, dim 64). User histories come from the dataset the bundle was
trained on when that file is readable, else from the synthetic dataset.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from services.ingest.datasets import read_sequences
from services.common.bundle import latest_version, load_bundle
from services.common.stores.user_state import EmbeddingWrite, EventWrite, RedisUserStateStore

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = Path("/tmp/shopstream-models")
WORKDIR = REPO / "var" / "bench"


def models_dir(given: Path | None = None) -> Path:
    """A directory with a LATEST bundle (trains a small one when none exists)."""
    for candidate in (given, SHARED_MODELS, WORKDIR / "models"):
        if candidate is not None and latest_version(candidate) is not None:
            return candidate
    if given is not None:
        raise SystemExit(f"no model bundle in {given}")
    from services.ingest.synthetic import SyntheticConfig, generate, write_dataset

    paths = write_dataset(generate(SyntheticConfig()), WORKDIR / "data")
    out = WORKDIR / "models"
    print(f"==> training a bench model into {out} (synthetic data, 3 epochs, dim 64)", flush=True)
    subprocess.run([sys.executable, "-m", "services.training", "--data", str(paths["sequences"]),
                    "--models-dir", str(out), "--epochs", "3", "--dim", "64"], check=True)
    return out


def sequences_for(models: Path) -> dict[str, list[str]]:
    """Per-user item sequences in the model's vocabulary (users with at least 3 items)."""
    bundle_dir = models / latest_version(models)
    import json

    meta = json.loads((bundle_dir / "metadata.json").read_text())
    path = Path(meta.get("dataset", {}).get("path", ""))
    if not path.is_file():
        path = WORKDIR / "data" / "sequences.txt"
    if not path.is_file():
        from services.ingest.synthetic import SyntheticConfig, generate, write_dataset

        path = write_dataset(generate(SyntheticConfig()), WORKDIR / "data")["sequences"]
    return {u: list(s) for u, s in read_sequences(path).items() if len(s) >= 3}


async def populate_users(redis, models: Path, sequences: dict[str, list[str]], users: list[str],
                         prefix: str = "bench") -> list[str]:
    """Write these users' histories (as the features worker would) and current embeddings.

    Returns the user ids written (``prefix``-``user``), each known to the ranker.
    """
    store = RedisUserStateStore(redis)
    bundle = load_bundle(models, latest_version(models), prefer_gpu=False, intra_op_threads=1)
    ids = []
    for start in range(0, len(users), 500):
        chunk = users[start:start + 500]
        writes = [EventWrite(f"{prefix}-{u}-{n}", f"{prefix}-{u}", item, 1, 1_700_000_000_000 + n)
                  for u in chunk for n, item in enumerate(sequences[u])]
        applied = await store.apply_events_with_states(writes, bundle.max_len)
        states = list(applied.states.values())
        vectors = bundle.encode([s.history for s in states])
        await store.put_embeddings([EmbeddingWrite(s.user_id, bundle.version, s.hist_version, vectors[i])
                                    for i, s in enumerate(states)])
        ids += [s.user_id for s in states]
    return ids
