"""Training support shared by the example scripts: Trainer subclasses, model-card rendering, Hub upload."""
