"""srsalvage user interfaces: the command line (app.cli) and the Textual workstation."""
