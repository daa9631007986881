"""The learning side's pipeline: ETL, training, the model registry and the model sync that
serving processes run (`docs/pipeline.md`, `docs/registry.md`). Never on the auction's hot
path."""
