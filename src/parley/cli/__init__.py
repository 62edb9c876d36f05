"""The command line: `parley chat`, `parley serve`, `parley bench`."""
