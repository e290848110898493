"""transformers pipelines for the package's models, registered with `transformers.pipeline` at `import ctal_hf`."""
