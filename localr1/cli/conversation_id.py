"""The click type of every conversation id the CLI takes (`history show/rm/export`,
`run --cid`): 1..2^63-1, else one error line and exit 1 (it raises our StoreError)."""

from __future__ import annotations

import click


class ConversationIdType(click.ParamType):
    name = "ID"

    def convert(self, value, param, ctx) -> int:
        from localr1.store.records import parse_conversation_id

        return parse_conversation_id(value)


CONVERSATION_ID = ConversationIdType()
