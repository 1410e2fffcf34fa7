"""Liveness: random challenges, photo and replay defences, depth, passive model, evaluation."""
