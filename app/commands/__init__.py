"""One module per headless command. Each defines ORDER (position in --help) and
register(subparsers), which adds its sub-parser and sets `func` to a callable(args) -> exit code.
app.cli discovers them all, so adding a command never edits a shared file."""
