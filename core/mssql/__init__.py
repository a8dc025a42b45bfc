"""Reading the tables inside SQL Server data files: records (`records`), values (`types`),
off-row values (`lob`), page access, verification and page walks (`pages`), the rows of an
allocation unit (`rows`), the system base tables (`catalog`), the user tables and their CSV
(`tables`), several files grouped by database (`database`). Carving the pages out of a disk is
`core.carve.mssql`."""
