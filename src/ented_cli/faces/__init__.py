"""Faces: detection, alignment to the template, paste-back, identity, reference warps."""
