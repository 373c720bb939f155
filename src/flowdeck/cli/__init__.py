"""The ``flowdeck`` command line (typer + rich)."""
