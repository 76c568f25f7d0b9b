"""Transports of the round: in-process objects, or gRPC between OS processes."""
