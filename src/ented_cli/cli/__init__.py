"""The `ented` command line."""
