"""srsalvage core engine: evidence access, format parsers, reconstruction, export and carving.

Nothing in this package imports textual, rich, app or widgets (tests/test_layers.py proves it):
the engine is driven by the command line and the workstation alike.
"""
