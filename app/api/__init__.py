"""The HTTP layer: dependencies, views and one router module per resource."""
