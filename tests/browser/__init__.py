"""Tests (a package, so that modules in different folders may share a name)."""
