"""Everything that touches the outside: Redis, HTTP, payload sanitizing."""
