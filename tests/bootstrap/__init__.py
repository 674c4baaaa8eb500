"""Tests of the in-container bootstraps (images/); see test_bootstrap.py."""
