"""Screens: the chat, the welcome for a first run, models, settings and small dialogs."""
