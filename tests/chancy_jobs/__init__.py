"""Job modules for the chancy executor tests, one per kind of module tree."""
