"""Email: rendering templates, queuing messages in the log, composing MIME and delivering it."""
