"""Document parsing: PDF through poppler, DOCX through LibreOffice then poppler, text into chunks.

`parse.parse_document` is the entry point the runner's `parse_document` task calls; the other
modules are its parts (`process` runs the external tools, `detect` tells a file's type from its
bytes, `pdf` reads a PDF, `office` converts with LibreOffice, `chunking` splits text).
"""
