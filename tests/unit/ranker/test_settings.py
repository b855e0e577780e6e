import pytest

from services.common.settings import SettingsError, load
from services.ranker.settings import RankerSettings


def test_defaults(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    s = load(RankerSettings)
    assert s.addr == "127.0.0.1:50051"
    assert s.metrics_host == "127.0.0.1"  # internal: loopback unless a deployment says otherwise
    assert s.server_tls() is None and s.health_addr == ""
    assert s.max_k >= 100


def test_bad_addr_names_the_variable(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_RANKER_ADDR", "nonsense")
    with pytest.raises(SettingsError) as err:
        load(RankerSettings)
    assert "SHOPSTREAM_RANKER_ADDR" in str(err.value)


def test_onnxruntime_threads_default_to_the_cores_shared_by_the_batches_in_flight(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setenv("SHOPSTREAM_RANKER_BATCH_MAX_IN_FLIGHT", "2")
    assert load(RankerSettings).ort_threads == 4
    assert load(RankerSettings).scoring_config().intra_op_threads == 4
    monkeypatch.setenv("SHOPSTREAM_RANKER_INTRA_OP_THREADS", "3")
    assert load(RankerSettings).ort_threads == 3
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    monkeypatch.delenv("SHOPSTREAM_RANKER_INTRA_OP_THREADS")
    assert load(RankerSettings).ort_threads == 1


def test_more_batches_in_flight_than_executor_threads_fails_naming_both(monkeypatch):
    monkeypatch.setenv("SHOPSTREAM_RANKER_EXECUTOR_THREADS", "2")
    monkeypatch.setenv("SHOPSTREAM_RANKER_BATCH_MAX_IN_FLIGHT", "3")
    with pytest.raises(SettingsError) as err:
        load(RankerSettings)
    assert "SHOPSTREAM_RANKER_BATCH_MAX_IN_FLIGHT" in str(err.value)
    assert "SHOPSTREAM_RANKER_EXECUTOR_THREADS is 2" in str(err.value)


def test_the_batching_settings_reach_the_rank_batcher(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from services.ranker.metrics import ranker_metrics
    from services.ranker.server import make_batcher

    monkeypatch.setenv("SHOPSTREAM_RANKER_EXECUTOR_THREADS", "3")
    monkeypatch.setenv("SHOPSTREAM_RANKER_BATCH_MAX_IN_FLIGHT", "3")
    monkeypatch.setenv("SHOPSTREAM_RANKER_BATCH_MAX_SIZE", "16")
    with ThreadPoolExecutor(1) as executor:
        batcher = make_batcher(load(RankerSettings), executor, ranker_metrics())
    assert (batcher.max_in_flight, batcher.max_batch_size) == (3, 16)


def test_ranker_tls_is_mutual_or_absent(monkeypatch, tmp_path):
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    monkeypatch.setenv("SHOPSTREAM_RANKER_TLS_CERT_FILE", str(pem))
    monkeypatch.setenv("SHOPSTREAM_RANKER_TLS_KEY_FILE", str(pem))
    with pytest.raises(SettingsError, match="SHOPSTREAM_RANKER_TLS_CLIENT_CA_FILE goes with"):
        load(RankerSettings)
    monkeypatch.setenv("SHOPSTREAM_RANKER_TLS_CLIENT_CA_FILE", str(pem))
    tls = load(RankerSettings).server_tls()
    assert tls.client_ca == pem  # callers must present a certificate the CA signed
    monkeypatch.delenv("SHOPSTREAM_RANKER_TLS_KEY_FILE")
    with pytest.raises(SettingsError, match="set both or neither"):
        load(RankerSettings)
