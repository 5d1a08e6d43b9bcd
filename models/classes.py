"""Class names of the datasets we know by name."""

# CIFAR-10's label order: index i in the dataset is CIFAR10_CLASSES[i].
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
