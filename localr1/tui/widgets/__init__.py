"""Widgets of the chat screen, one concept per module."""
