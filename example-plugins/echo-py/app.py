"""Echoes every message, text or binary, back to its sender."""

import wsgate


class Listener(wsgate.Listener):
    def on_message(self, conn, msg):
        return msg
