"""Helpers the test folders share; fixtures stay in the conftest.py files."""
