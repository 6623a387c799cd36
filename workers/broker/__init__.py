"""How the worker reaches its broker: kombu transports and the consumer that checks each message."""
