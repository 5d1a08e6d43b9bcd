"""The offline trainer: `python -m training.run`, plus predict, evaluate, convert and export
(ONNX and a Triton model repository)."""
