"""Shared infrastructure every layer uses: errors, files, paths, progress lines, Spark sessions, code
version, plots, KFP output metadata and test crash points."""
