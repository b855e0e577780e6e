"""Experiments: definitions (definition.py), who sees which variant (assignment.py), where
definitions live (store.py, Redis), how a shadow compares with what was served
(compare.py) and the ``shopstream experiments`` commands (cli.py). docs/experiments.md."""
