"""{{name}}: a wsgate listener. It greets each new connection and answers
every text message; binary messages come back unchanged.

The host calls these hooks; ``wsgate.host`` is how the listener acts (send,
broadcast, channels, tags, state, timers). The server runs several
instances, so keep data in ``host.set_attribute`` (per connection) or
``host.state_set`` (shared), never in globals.
"""

import wsgate
from wsgate import Message, OpenDecision


class Listener(wsgate.Listener):
    def on_open(self, conn, req):
        return OpenDecision.greet("welcome to {{name}}")

    def on_message(self, conn, msg):
        text = Message.as_text(msg)
        if text is None:
            return msg
        return Message.text(f"echo: {text}")
