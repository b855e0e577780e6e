"""The model bundle: its files (``files``), onnxruntime sessions (``sessions``), running
the encoder (``encoding``) and the loaded bundle (``model``). This package stays free of torch."""
from services.common.bundle.errors import BundleError
from services.common.bundle.files import (latest_version, read_bundle_files, sha256_file,
                                          write_bundle, write_latest)
from services.common.bundle.model import ModelBundle, load_bundle

__all__ = ["BundleError", "ModelBundle", "latest_version", "load_bundle", "read_bundle_files", "sha256_file",
           "write_bundle", "write_latest"]
