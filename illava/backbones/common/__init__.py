"""Pieces several backbone families share: tower adapters, group reduction, ragged encoder runs, decoder scoring."""
