"""Studies: pure functions over (model, data). No mlflow, dvc or typer here."""
