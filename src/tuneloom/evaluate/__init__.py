"""Evaluation of a fine-tuned model: scoring its generations against held-out completions."""
