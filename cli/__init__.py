"""The `monitao-pd` command line."""
