"""Which models exist and how they are fetched, compressed and loaded."""
