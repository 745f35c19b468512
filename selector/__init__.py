"""Surgical fine-tuning engine: layer groups, surgical fine-tuning, Auto-RGN, built-in data."""
