"""The compatibility suite: real libraries given a router (see conftest.py)."""
