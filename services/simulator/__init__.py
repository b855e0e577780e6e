"""The shopper simulator: synthetic shoppers with known tastes who ask the gateway for
recommendations, look at the lists with a position bias, click / add to cart / buy,
send those events back with the ``recommendation_id``, and log everything they saw and
did (the oracle for attribution and each variant's ground-truth CTR).

``tastes.py`` (what a shopper likes, drift), ``behaviour.py`` (how a list is looked at),
``journal.py`` (the JSONL log and what it sums to), ``runner.py`` (the asyncio driver
over the gateway's gRPC API), ``cli.py`` (``shopstream simulate``) and ``loop.py``
(``shopstream loop``, the whole closed loop).
"""
