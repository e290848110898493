"""Data for every model family: sources (manifests, LibriSpeech, `datasets`), feature preparation, collators and the
synthesised demo corpus."""
