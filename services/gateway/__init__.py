"""The gateway: the storefront's public gRPC API, with business rules and fallbacks."""
