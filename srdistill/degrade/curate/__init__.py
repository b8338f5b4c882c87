"""Curating the HR side: per-image scores, embeddings, selection and the threshold report."""
