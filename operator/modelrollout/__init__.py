"""modelrollout: progressive delivery of ML models on Kubernetes, decided by sound statistics."""

__version__ = "0.1.0.dev0"
