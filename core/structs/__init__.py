"""construct declarations of every on-disk structure, one module per format."""
