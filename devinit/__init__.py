"""devinit: Dapr's state management API on a laptop, in one command."""

__version__ = "0.1.0"
