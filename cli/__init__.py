"""Layer 6: the ``ms`` command line: parse, call ``modelstore.api``, render."""
