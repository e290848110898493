"""Model families: one folder each, with its configuration, modeling, feature extraction, tokenization and processing
modules (as in transformers' `models/`)."""
