"""One config per row of the course project's results table (SPEC section 8)."""
