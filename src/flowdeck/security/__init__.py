"""Password hashing and policy, token generation and hashing."""
