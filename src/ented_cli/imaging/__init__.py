"""Image files: reading, writing and pixel conversions."""
