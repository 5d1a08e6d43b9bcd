"""The offline trainer: `python -m training.run`, plus predict, evaluate and convert."""
