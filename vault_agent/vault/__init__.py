"""Reading the vault: which files count, how a note becomes chunks, and watching for changes."""
