"""What training and serving share: architectures, checkpoint format, preprocessing, classes.

Neither `app` nor `training` imports the other; both import this package.
"""

from pathlib import Path

# The checkpoint the service loads when MODEL_PATH is not set.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "cifar10_tutorial_cnn.pt"
