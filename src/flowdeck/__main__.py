from __future__ import annotations

from flowdeck.cli.main import main

main()
