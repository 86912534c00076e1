"""Evaluation protocols: split files (few-shot, zero-shot, base-to-novel), exact multi-view evaluation, reports."""
