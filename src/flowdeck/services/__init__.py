"""Use cases: what the API and the CLI ask flowdeck to do, on top of the store."""
