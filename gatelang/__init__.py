"""gatelang: privacy policies compiled into verified weight edits."""
__version__ = "0.1.0"
