class GigaGPTError(Exception):
    """A problem with the user's input (config, data, sizes): the CLI prints it on one line and exits 1."""
