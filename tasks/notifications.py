"""notifications.send: a templated email routed by category."""

from tasks.events import event_task

send = event_task("notifications.send")
