"""Contact events, from admins, upstream systems or the client area."""

from tasks.events import event_task

add = event_task("contacts.add")
update = event_task("contacts.update")
delete = event_task("contacts.delete")
