"""The one error a bundle raises: missing, incomplete, corrupt or failing validation."""


class BundleError(RuntimeError):
    """A bundle is missing, incomplete, fails its checksums or its validation."""
