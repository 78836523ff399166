"""The ``ms`` commands, grouped by what they touch."""
