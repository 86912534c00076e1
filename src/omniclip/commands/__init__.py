"""Subcommands of the ``omniclip`` command line; each module here registers its parsers with ``register``."""
