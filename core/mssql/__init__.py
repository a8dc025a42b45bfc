"""Reading the tables inside a SQL Server data file: records (`records`), values (`types`), the
system base tables (`catalog`), page access and verification (`pages`) and the user tables with
their rows (`tables`). Carving the pages out of a disk is `core.carve.mssql`."""
