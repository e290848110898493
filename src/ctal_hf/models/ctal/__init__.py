"""CTAL (Li et al., EMNLP 2021): a text encoder plus a text-referred audio encoder."""
