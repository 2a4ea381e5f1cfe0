"""Nearest neighbours over the catalogue's vectors: the faiss index and exact search with its metrics."""
