"""Engine layer: model registry, batching and scheduling. Knows nothing of HTTP or dialects."""
