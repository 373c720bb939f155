"""Route modules; each is thin and calls one service method."""
