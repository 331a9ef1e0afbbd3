"""The ``latent-search`` command line: the roof over cola_models, latent_search, eval and train.

It parses and validates, then hands a config to library code imported lazily inside each command,
so ``latent-search --help`` never loads torch. ``latent_search_cli.app`` holds the commands."""
