"""The Dagster layer of tledit-pipeline: thin assets over the `tledit_pipeline` engine."""
