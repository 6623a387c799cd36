"""services.upsert: the hosting services upstream billing sells to a client."""

from tasks.events import event_task

upsert = event_task("services.upsert")
