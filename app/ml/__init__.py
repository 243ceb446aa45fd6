"""Model adapters: embedder, detector, vector store, caption backends and the prompt format.

Nothing in this package imports the web layer, the database or the services.
"""
