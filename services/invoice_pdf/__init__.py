"""The invoice as a PDF (fpdf2): the document attached to the invoice emails that carry it."""
