"""The model bundle: its files (``files``), onnxruntime sessions (``sessions``), running
the encoder (``encoding``), the loaded bundle (``model``) and which versions serve
(``registry``: LATEST and CANDIDATES). This package stays free of torch."""
from services.common.bundle.errors import BundleError
from services.common.bundle.files import (latest_version, read_bundle_files, sha256_file,
                                          write_bundle, write_latest)
from services.common.bundle.model import ModelBundle, load_bundle
from services.common.bundle.registry import candidate_versions, publish_candidate, retire_candidate, set_live

__all__ = ["BundleError", "ModelBundle", "candidate_versions", "latest_version", "load_bundle", "publish_candidate",
           "read_bundle_files", "retire_candidate", "set_live", "sha256_file", "write_bundle", "write_latest"]
