"""``gamelab-caption serve``: the HTTP API and upload page (needs the ``serve`` extra).

Importing this package needs nothing beyond the SDK; ``gamelab_caption.server.app`` needs
FastAPI. Build the app in-process with ``create_app`` from there, or run
``gamelab-caption serve``.
"""
