"""Client events published by upstream systems."""

from tasks.events import event_task

add = event_task("clients.add")
update = event_task("clients.update")
set_status = event_task("clients.set_status")
set_billing_contact = event_task("clients.set_billing_contact")
close = event_task("clients.close")
