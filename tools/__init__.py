"""Development tools that are not part of the application (not shipped in the wheel)."""
