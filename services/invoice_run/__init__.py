"""The scheduled invoice run: generate invoices for services falling due, then send notices."""
