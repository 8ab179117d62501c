"""Conversation history in one SQLite file."""
