"""Code every service shares: settings, logging, gRPC plumbing, stores, the model bundle."""
