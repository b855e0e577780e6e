"""The committed generated code must be exactly what scripts/gen_protos.py produces."""
import filecmp
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(base: Path) -> set[str]:
    return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_generated_code_matches_protos(tmp_path):
    _load_generator().generate(tmp_path)
    committed = ROOT / "gen" / "python"
    fresh, old = _files(tmp_path), _files(committed)
    assert fresh == old, f"file sets differ; run `make protos`: {sorted(fresh ^ old)}"
    _, mismatch, errors = filecmp.cmpfiles(committed, tmp_path, sorted(fresh), shallow=False)
    assert not mismatch and not errors, f"stale generated code, run `make protos`: {mismatch + errors}"


def test_enums_start_with_unspecified():
    from shopstream.events.v1 import events_pb2
    from shopstream.gateway.v1 import gateway_pb2

    for enum in (events_pb2.EventType, events_pb2.Device, gateway_pb2.Strategy):
        zero = enum.DESCRIPTOR.values_by_number[0].name
        assert zero.endswith("_UNSPECIFIED"), zero
