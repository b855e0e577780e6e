"""Merchandising rules: the filter expression language (``language``), its evaluation over the
catalog (``evaluate``), and named expressions stored durably (``registry``)."""
