"""Live events: the bus that carries committed events to streams and other listeners."""
