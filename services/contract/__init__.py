"""The event and catalog contract that belongs to no one service.

What a well-formed event or catalog record is (``validation``), the limits every
service enforces (``limits``), the Kafka topic names (``topics``) and the one
producer that writes them (``producer``). The gateway, the features worker and the
ingest CLI import it; it imports nothing of theirs.
"""
