"""Data by name: image folders, Hub and saved data sets, text, the named offline sets, and samples for measuring."""
