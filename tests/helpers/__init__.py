"""Reusable helpers for softswitch tests (a real local HTTP app: tests.helpers.webapp)."""
