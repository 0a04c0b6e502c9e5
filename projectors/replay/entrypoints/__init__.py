"""`campaigns replay ...`: the command line."""
