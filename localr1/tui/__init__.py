"""`localr1 chat`: the Textual front end. Only this package imports textual.

Entry point: `localr1.tui.app.run_chat(model, conversation_id)`.
"""
